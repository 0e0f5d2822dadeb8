//! `georep-bench`: georep against rsync over the same loopback sshd, in the
//! same run, on fixtures it builds itself (issue 6).
//!
//! Each workload runs georep (the real `geo-rep` binary next to the bench
//! executable, driven through its CLI) and `rsync -a --delete` over the same
//! sshd, alternating run by run, and reports medians. georep's time for a
//! first sync is from `geo-rep start` until `status --json` shows every
//! brick's stime past the moment the fixture was complete; for changes to a
//! running, synced session it is from the moment the change was complete
//! until stime passes it. Bytes are georep's `bytes_sent` (protocol bytes)
//! and rsync's `Total bytes sent`.

mod fixtures;
mod geo;
mod gluster;
mod limits;
mod procfs;
mod relay;
mod report;
mod rsync;
mod stats;
mod workloads;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::Sshd;
use anyhow::{bail, Context, Result};
use clap::Parser;

use self::rsync::Rsync;
use self::stats::{fmt_bytes, fmt_secs};

/// Every workload, in the order they run.
pub const WORKLOADS: &[&str] = &[
    "limits",
    "small-initial",
    "big-initial",
    "big-delta",
    "incremental",
    "latency",
    "rename-storm",
    "wan",
    "volume",
];

/// Workloads run only when named: `gluster` needs glusterd on the system's
/// working directory (`/var/lib/glusterd`, where it also leaves glusterd's
/// geo-replication keys), so it cannot run while the test kit's shared
/// glusterd, with its own working directory, is up.
pub const OPT_IN: &[&str] = &["gluster"];

#[derive(Debug, Parser)]
#[command(
    name = "georep-bench",
    about = "Benchmark georep against rsync over the same loopback sshd",
    after_help = "Workloads: limits small-initial big-initial big-delta incremental latency rename-storm wan volume (default: all); gluster (only when named)"
)]
pub struct Opts {
    /// Smoke-test sizes, one run each (well under a minute).
    #[arg(long, conflicts_with = "full")]
    pub quick: bool,
    /// The full sizes (100k files, 1 GiB, 1M-file incremental…): long.
    #[arg(long)]
    pub full: bool,
    /// Runs per measurement (median reported); default 1 with --quick, else 3.
    #[arg(long)]
    pub runs: Option<usize>,
    /// Cipher for rsync's ssh (the one georep prefers, so the tools are
    /// compared, not the ciphers).
    #[arg(long, default_value = "aes128-gcm@openssh.com")]
    pub rsync_cipher: String,
    /// Where the temporary working directory is made.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the working directory (fixtures, slaves, georep homes and logs).
    #[arg(long)]
    pub keep: bool,
    /// Where `results.json` and `ratios.svg` are written.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
    /// Workloads to run (default: all).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(WORKLOADS.iter().chain(OPT_IN)))]
    pub workloads: Vec<String>,
}

/// Sizes of one run of the benchmark.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: &'static str,
    pub runs: usize,
    pub small_files: usize,
    pub small_dirs: usize,
    pub big_bytes: u64,
    pub delta_bytes: u64,
    /// Tree sizes for the incremental workload (growth is compared).
    pub incr_trees: Vec<usize>,
    pub incr_changes: usize,
    pub latency_tree: usize,
    pub latency_writes: usize,
    /// Longest random pause before each latency write (one rollover period
    /// spreads the writes over its phases).
    pub latency_pause: Duration,
    pub burst_files: usize,
    pub storm_files: usize,
    pub storm_one_by_one: usize,
    pub pipe_bytes: u64,
    pub wan_small_files: usize,
    pub wan_big_bytes: u64,
    /// `gluster`: small files and the one big file written through the
    /// mount, and how long one write may take to reach a slave.
    pub gluster_files: usize,
    pub gluster_big_bytes: u64,
    pub gluster_lag_timeout: Duration,
    /// How long `gluster` waits for a slave to equal the mount.
    pub gluster_timeout: Duration,
    pub sync_timeout: Duration,
}

impl Profile {
    pub fn quick() -> Profile {
        Profile {
            name: "quick",
            runs: 1,
            small_files: 1_000,
            small_dirs: 10,
            big_bytes: 8 << 20,
            delta_bytes: 1 << 20,
            incr_trees: vec![1_000],
            incr_changes: 20,
            latency_tree: 200,
            latency_writes: 3,
            latency_pause: Duration::from_millis(300),
            burst_files: 100,
            storm_files: 500,
            storm_one_by_one: 100,
            pipe_bytes: 32 << 20,
            wan_small_files: 200,
            wan_big_bytes: 4 << 20,
            gluster_files: 100,
            gluster_big_bytes: 4 << 20,
            gluster_lag_timeout: Duration::from_secs(30),
            gluster_timeout: Duration::from_secs(120),
            sync_timeout: Duration::from_secs(120),
        }
    }

    pub fn default_sizes() -> Profile {
        Profile {
            name: "default",
            runs: 3,
            small_files: 20_000,
            small_dirs: 200,
            big_bytes: 256 << 20,
            delta_bytes: 1 << 20,
            incr_trees: vec![10_000, 50_000],
            incr_changes: 100,
            latency_tree: 1_000,
            latency_writes: 30,
            latency_pause: Duration::from_secs(1),
            burst_files: 1_000,
            storm_files: 10_000,
            storm_one_by_one: 2_000,
            pipe_bytes: 256 << 20,
            wan_small_files: 5_000,
            wan_big_bytes: 64 << 20,
            gluster_files: 2_000,
            gluster_big_bytes: 200 << 20,
            gluster_lag_timeout: Duration::from_secs(60),
            gluster_timeout: Duration::from_secs(240),
            sync_timeout: Duration::from_secs(900),
        }
    }

    pub fn full() -> Profile {
        Profile {
            name: "full",
            runs: 3,
            small_files: 100_000,
            small_dirs: 1_000,
            big_bytes: 1 << 30,
            delta_bytes: 1 << 20,
            incr_trees: vec![100_000, 1_000_000],
            incr_changes: 100,
            latency_tree: 1_000,
            latency_writes: 200,
            latency_pause: Duration::from_secs(1),
            burst_files: 1_000,
            storm_files: 50_000,
            storm_one_by_one: 10_000,
            pipe_bytes: 1 << 30,
            wan_small_files: 100_000,
            wan_big_bytes: 1 << 30,
            gluster_files: 2_000,
            gluster_big_bytes: 200 << 20,
            gluster_lag_timeout: Duration::from_secs(60),
            gluster_timeout: Duration::from_secs(240),
            sync_timeout: Duration::from_secs(3600),
        }
    }
}

/// One line of the result table. `None` prints as `-`.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub workload: String,
    pub georep_s: Option<f64>,
    pub rsync_s: Option<f64>,
    pub georep_bytes: Option<u64>,
    pub rsync_bytes: Option<u64>,
    /// Peak RSS of the monitor (KiB), the largest over the runs.
    pub monitor_rss_kib: Option<u64>,
    /// Peak RSS of the slave process (KiB).
    pub slave_rss_kib: Option<u64>,
    /// CPU seconds of monitor + slave (median).
    pub cpu_s: Option<f64>,
    pub p50_s: Option<f64>,
    pub p99_s: Option<f64>,
    pub note: String,
}

impl Row {
    /// georep's time over the peer's, where both were measured.
    pub fn ratio(&self) -> Option<f64> {
        match (self.georep_s, self.rsync_s) {
            (Some(g), Some(p)) if p > 0.0 => Some(g / p),
            _ => None,
        }
    }
}

/// Everything the workloads share.
pub struct Ctx {
    pub profile: Profile,
    pub geo_rep: PathBuf,
    pub sshd: Sshd,
    pub rsync: Rsync,
    pub rsync_cipher: String,
    pub work: PathBuf,
    /// The ssh pipe's MB/s with `rsync_cipher`, once `limits` measured it.
    pub pipe_mbs: std::cell::Cell<Option<f64>>,
    seq: std::cell::Cell<u32>,
    small: std::cell::OnceCell<fixtures::SmallTree>,
    storm: std::cell::OnceCell<(PathBuf, fixtures::SmallTree, std::time::Instant)>,
}

impl Ctx {
    /// A path under the working directory that was never used before
    /// (fresh directories: ext4 here slows creation after mass deletes).
    pub fn fresh(&self, name: &str) -> PathBuf {
        let n = self.seq.get() + 1;
        self.seq.set(n);
        self.work.join(format!("{n:03}-{name}"))
    }

    /// The master of `rename-storm`: `storm0/` holding the files, built
    /// once; with the moment it was complete. Built early in the run, so the
    /// files have aged by the time they are renamed.
    pub fn storm_tree(&self) -> Result<(PathBuf, &fixtures::SmallTree, std::time::Instant)> {
        if let Some((m, t, w)) = self.storm.get() {
            return Ok((m.clone(), t, *w));
        }
        let n = self.profile.storm_files;
        progress(&format!("building the rename-storm directory of {n} files"));
        let master = self.fresh("storm-master");
        std::fs::create_dir(&master)?;
        let tree = fixtures::small_tree(&master.join("storm0"), n, 1, 13)?;
        let (m, t, w) = self
            .storm
            .get_or_init(|| (master, tree, std::time::Instant::now()));
        Ok((m.clone(), t, *w))
    }

    /// The small-file tree of `small-initial` (built once, never changed).
    pub fn small_tree(&self) -> Result<&fixtures::SmallTree> {
        if let Some(t) = self.small.get() {
            return Ok(t);
        }
        let p = &self.profile;
        progress(&format!(
            "building the small-file tree: {} files in {} directories",
            p.small_files, p.small_dirs
        ));
        let t = fixtures::small_tree(&self.fresh("small-master"), p.small_files, p.small_dirs, 1)?;
        Ok(self.small.get_or_init(|| t))
    }
}

pub fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

/// Runs the benchmark described by `opts`, printing the table to stdout.
pub fn run(opts: Opts) -> Result<()> {
    let mut profile = if opts.quick {
        Profile::quick()
    } else if opts.full {
        Profile::full()
    } else {
        Profile::default_sizes()
    };
    if let Some(r) = opts.runs {
        if r == 0 {
            bail!("--runs must be at least 1");
        }
        profile.runs = r;
    }
    let selected: Vec<&str> = if opts.workloads.is_empty() {
        WORKLOADS.to_vec()
    } else {
        WORKLOADS
            .iter()
            .chain(OPT_IN)
            .copied()
            .filter(|w| opts.workloads.iter().any(|s| s == w))
            .collect()
    };
    let geo_rep = geo_rep_binary()?;
    let tmp = match &opts.dir {
        Some(d) => tempfile::Builder::new()
            .prefix("georep-bench-")
            .tempdir_in(d),
        None => tempfile::Builder::new().prefix("georep-bench-").tempdir(),
    }
    .context("creating the working directory")?;
    let sshd = Sshd::start().context("starting the loopback sshd")?;
    let rsync = Rsync::new(&sshd, sshd.port(), Some(&opts.rsync_cipher));
    progress(&format!(
        "profile {} ({} run(s) each); working directory {}; sshd on 127.0.0.1:{}",
        profile.name,
        profile.runs,
        tmp.path().display(),
        sshd.port()
    ));
    progress(&format!("geo-rep: {}", geo_rep.display()));
    progress(&format!("rsync -e \"{}\"", rsync.rsh()));
    let ctx = Ctx {
        profile,
        geo_rep,
        sshd,
        rsync,
        rsync_cipher: opts.rsync_cipher.clone(),
        work: tmp.path().to_path_buf(),
        pipe_mbs: Default::default(),
        seq: Default::default(),
        small: Default::default(),
        storm: Default::default(),
    };
    if selected.contains(&"rename-storm") {
        ctx.storm_tree()?;
    }
    let mut limits_text = String::new();
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for w in selected {
        progress(&format!("== {w}"));
        let began = std::time::Instant::now();
        let result = match w {
            "limits" => workloads::limits(&ctx).map(|t| {
                limits_text = t;
                Vec::new()
            }),
            "small-initial" => workloads::small_initial(&ctx),
            "big-initial" => workloads::big_initial(&ctx),
            "big-delta" => workloads::big_delta(&ctx),
            "incremental" => workloads::incremental(&ctx),
            "latency" => workloads::latency(&ctx),
            "rename-storm" => workloads::rename_storm(&ctx),
            "wan" => workloads::wan(&ctx),
            "volume" => workloads::volume_small_initial(&ctx),
            "gluster" => gluster::gluster_side_by_side(&ctx),
            other => bail!("unknown workload {other}"),
        };
        progress(&format!(
            "{w} took {}",
            fmt_secs(began.elapsed().as_secs_f64())
        ));
        match result {
            Ok(r) => rows.extend(r),
            Err(e) => {
                progress(&format!("{w} FAILED: {e:#}"));
                rows.push(Row {
                    workload: w.to_owned(),
                    note: format!("FAILED: {e:#}"),
                    ..Default::default()
                });
                failed.push(w);
            }
        }
    }
    println!();
    println!(
        "georep-bench, profile {}, median of {} run(s), {} CPUs",
        ctx.profile.name,
        ctx.profile.runs,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if !limits_text.is_empty() {
        print!("{limits_text}");
    }
    print!("{}", table(&rows));
    let info = report::RunInfo::now(ctx.profile.name, ctx.profile.runs);
    match report::write(&opts.out, &info, &rows) {
        Ok((json, svg)) => println!("written: {} and {}", json.display(), svg.display()),
        Err(e) => {
            progress(&format!("the result files: {e:#}"));
            failed.push("result files");
        }
    }
    if opts.keep {
        let kept = tmp.keep();
        println!("working directory kept: {}", kept.display());
    } else {
        drop(ctx);
        progress("removing the working directory");
        drop(tmp);
    }
    if !failed.is_empty() {
        bail!("workload(s) failed: {}", failed.join(", "));
    }
    Ok(())
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

/// The result table, columns padded.
pub fn table(rows: &[Row]) -> String {
    let header = [
        "workload",
        "georep",
        "rsync",
        "ratio",
        "georep sent",
        "rsync sent",
        "georep RSS",
        "slave RSS",
        "georep CPU",
        "p50",
        "p99",
        "note",
    ];
    let mut cells: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in rows {
        cells.push(vec![
            r.workload.clone(),
            opt(r.georep_s, fmt_secs),
            opt(r.rsync_s, fmt_secs),
            opt(r.ratio(), |x| format!("{x:.2}x")),
            opt(r.georep_bytes, fmt_bytes),
            opt(r.rsync_bytes, fmt_bytes),
            opt(r.monitor_rss_kib, mib),
            opt(r.slave_rss_kib, mib),
            opt(r.cpu_s, |c| format!("{c:.2} s")),
            opt(r.p50_s, fmt_secs),
            opt(r.p99_s, fmt_secs),
            r.note.clone(),
        ]);
    }
    let cols = header.len();
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            cells
                .iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, row) in cells.iter().enumerate() {
        let mut line = String::new();
        for c in 0..cols {
            if c + 1 == cols {
                line.push_str(&row[c]);
            } else if c == 0 {
                let _ = write!(line, "{:<w$}  ", row[c], w = widths[c]);
            } else {
                let _ = write!(line, "{:>w$}  ", row[c], w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
        if i == 0 {
            out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (cols - 1)));
            out.push('\n');
        }
    }
    out
}

fn geo_rep_binary() -> Result<PathBuf> {
    crate::geo_rep_beside_current_exe().context("locating or building geo-rep for the benchmark")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_and_shows_ratios() {
        let t = table(&[Row {
            workload: "x".into(),
            georep_s: Some(1.0),
            rsync_s: Some(2.0),
            ..Default::default()
        }]);
        assert!(t.contains("0.50x"), "{t}");
        assert_eq!(t.lines().count(), 3);
    }

    #[test]
    fn gluster_runs_only_when_named() {
        assert!(!WORKLOADS.contains(&"gluster"));
        let o = Opts::try_parse_from(["georep-bench", "--quick", "gluster"]).unwrap();
        assert_eq!(o.workloads, ["gluster"]);
    }
}
