//! The workloads of issue 6. Each returns the table rows it measured.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::glusterfs::{self, Volume};
use crate::{compare_trees, CompareOptions};
use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};

use super::fixtures::{self, SmallTree};
use super::geo::{now_ns, Geo, Usage, UsageProbe};
use super::limits;
use super::relay::{LinkShape, Relay};
use super::rsync::Rsync;
use super::stats::{fmt_bytes, fmt_secs, median, median_u64, percentile, secs};
use super::{progress, Ctx, Row};

/// Measurements of one workload over its runs.
#[derive(Default)]
struct Samples {
    georep: Vec<f64>,
    rsync: Vec<f64>,
    georep_bytes: Vec<u64>,
    rsync_bytes: Vec<u64>,
    cpu: Vec<f64>,
    monitor_rss: u64,
    slave_rss: u64,
}

impl Samples {
    fn usage(&mut self, u: Usage) {
        self.cpu.push(u.cpu_secs);
        self.monitor_rss = self.monitor_rss.max(u.monitor_hwm_kib);
        self.slave_rss = self.slave_rss.max(u.slave_hwm_kib);
    }

    fn row(&self, workload: impl Into<String>, note: String) -> Row {
        Row {
            workload: workload.into(),
            georep_s: median(&self.georep),
            rsync_s: median(&self.rsync),
            georep_bytes: median_u64(&self.georep_bytes),
            rsync_bytes: median_u64(&self.rsync_bytes),
            monitor_rss_kib: (self.monitor_rss > 0).then_some(self.monitor_rss),
            slave_rss_kib: (self.slave_rss > 0).then_some(self.slave_rss),
            cpu_s: median(&self.cpu),
            p50_s: None,
            p99_s: None,
            note,
        }
    }
}

fn run_line(label: &str, run: usize, runs: usize, g: f64, gb: u64, r: Option<(f64, u64)>) {
    let rs = r.map_or(String::new(), |(t, b)| {
        format!(", rsync {} ({})", fmt_secs(t), fmt_bytes(b))
    });
    progress(&format!(
        "{label}: run {}/{runs}: georep {} ({}){rs}",
        run + 1,
        fmt_secs(g),
        fmt_bytes(gb)
    ));
}

/// The slave must equal the master (Invariant 6: verify what landed).
fn verify(master: &Path, slave: &Path) -> Result<()> {
    let diffs = compare_trees(master, slave, &CompareOptions::default());
    if diffs.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = diffs.iter().take(10).map(|d| d.to_string()).collect();
    bail!(
        "the georep slave {} differs from the master {} in {} place(s): {}",
        slave.display(),
        master.display(),
        diffs.len(),
        shown.join("; ")
    )
}

fn new_session(ctx: &Ctx, masters: &[&Path], port: u16) -> Result<Geo> {
    Geo::create(
        &ctx.geo_rep,
        &ctx.fresh("home"),
        masters,
        &ctx.fresh("slave"),
        &ctx.sshd,
        port,
    )
}

/// Waits for stime past `t_ns`, adding the monitor's log to a failure.
fn wait(geo: &Geo, ctx: &Ctx, t_ns: i64) -> Result<Instant> {
    geo.wait_stime_past(t_ns, ctx.profile.sync_timeout)
        .map_err(|e| anyhow::anyhow!("{e:#}\n--- monitor log ---\n{}", geo.monitor_log_tail()))
}

/// A started session over `master` whose first sync is done.
fn synced_session(ctx: &Ctx, master: &Path, port: u16) -> Result<Geo> {
    let mut geo = new_session(ctx, &[master], port)?;
    let t = now_ns();
    geo.start()?;
    wait(&geo, ctx, t)?;
    Ok(geo)
}

/// First sync of `master` into fresh slaves, `runs` times each tool.
fn initial(ctx: &Ctx, label: &str, master: &Path, port: u16, rsync: &Rsync) -> Result<Samples> {
    initial_with(ctx, label, master, port, rsync, &[], None)
}

/// [`initial`] with the sessions configured by `config` (key, value) before
/// they start, and into the GlusterFS volume `into` (emptied after each
/// run; rsync writes through its mount) instead of fresh directories.
fn initial_with(
    ctx: &Ctx,
    label: &str,
    master: &Path,
    port: u16,
    rsync: &Rsync,
    config: &[(&str, &str)],
    into: Option<&Volume>,
) -> Result<Samples> {
    let runs = ctx.profile.runs;
    let t_fix = now_ns();
    let mut s = Samples::default();
    for run in 0..runs {
        let mut geo = match into {
            None => new_session(ctx, &[master], port)?,
            Some(v) => Geo::create_into(
                &ctx.geo_rep,
                &ctx.fresh("home"),
                &[master],
                &v.name,
                &v.mount,
                &ctx.sshd,
                port,
            )?,
        };
        for (k, v) in config {
            geo.config(k, v)?;
        }
        let probe = UsageProbe::begin(&geo);
        let t0 = Instant::now();
        geo.start()?;
        let seen = wait(&geo, ctx, t_fix)?;
        s.usage(probe.end(&geo));
        let g = secs(seen - t0);
        let gb = geo.bytes_sent()?;
        geo.stop();
        if run == 0 {
            verify(master, geo.slave_dir())?;
        }
        s.georep.push(g);
        s.georep_bytes.push(gb);
        let rsync_dir = match into {
            None => ctx.fresh("rsync"),
            Some(v) => {
                empty(&v.mount)?;
                v.mount.join("rsync")
            }
        };
        let rr = rsync.sync(master, &rsync_dir)?;
        if let Some(v) = into {
            empty(&v.mount)?;
        }
        s.rsync.push(secs(rr.elapsed));
        s.rsync_bytes.push(rr.bytes_sent);
        run_line(
            label,
            run,
            runs,
            g,
            gb,
            Some((secs(rr.elapsed), rr.bytes_sent)),
        );
    }
    Ok(s)
}

/// Runs `change` against a synced session and measures until stime passes
/// the moment it was complete.
fn change_and_wait(
    ctx: &Ctx,
    geo: &Geo,
    change: impl FnOnce() -> Result<()>,
) -> Result<(f64, u64, Usage)> {
    let b0 = geo.bytes_sent()?;
    let probe = UsageProbe::begin(geo);
    change()?;
    let t_done = now_ns();
    let t = Instant::now();
    let seen = wait(geo, ctx, t_done)?;
    let usage = probe.end(geo);
    let b1 = geo.bytes_sent()?;
    Ok((secs(seen - t), b1.saturating_sub(b0), usage))
}

pub fn limits(ctx: &Ctx) -> Result<String> {
    let p = &ctx.profile;
    let mut out = String::new();
    let mib = p.pipe_bytes >> 20;
    for cipher in ["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"] {
        let mut t = Vec::new();
        for _ in 0..p.runs {
            t.push(secs(limits::ssh_pipe(
                &ctx.sshd,
                ctx.sshd.port(),
                cipher,
                p.pipe_bytes,
            )?));
        }
        let m = median(&t).unwrap_or(f64::NAN);
        let mbs = p.pipe_bytes as f64 / m / 1e6;
        if cipher == ctx.rsync_cipher {
            ctx.pipe_mbs.set(Some(mbs));
        }
        progress(&format!(
            "ssh pipe {mib} MiB {cipher}: {} = {mbs:.0} MB/s",
            fmt_secs(m)
        ));
        out.push_str(&format!(
            "raw ssh pipe ({mib} MiB of zeros, `ssh -c {cipher} 'cat >/dev/null'`): {mbs:.0} MB/s\n"
        ));
    }
    let tree = ctx.small_tree()?;
    let mut t = Vec::new();
    for _ in 0..p.runs {
        t.push(secs(limits::cp_a(&tree.root, &ctx.fresh("cp-a"))?));
    }
    let m = median(&t).unwrap_or(f64::NAN);
    let fps = tree.files.len() as f64 / m;
    progress(&format!("cp -a: {} = {fps:.0} files/s", fmt_secs(m)));
    out.push_str(&format!(
        "local cp -a of the small-file tree ({} files, {}): {} = {:.0} files/s\n",
        tree.files.len(),
        fmt_bytes(tree.bytes),
        fmt_secs(m),
        fps
    ));
    Ok(out)
}

pub fn small_initial(ctx: &Ctx) -> Result<Vec<Row>> {
    let tree = ctx.small_tree()?;
    let s = initial(
        ctx,
        "small-initial",
        &tree.root,
        ctx.sshd.port(),
        &ctx.rsync,
    )?;
    Ok(vec![small_row(&s, "small-initial", tree)])
}

/// The small-file tree into a GlusterFS volume named as the slave (the
/// slave mounts it itself), against rsync writing through a mount of the
/// same volume: what writing through FUSE costs each. Needs root and FUSE.
pub fn volume_small_initial(ctx: &Ctx) -> Result<Vec<Row>> {
    if let Some(why) = glusterfs::unavailable() {
        bail!("{why}");
    }
    let tree = ctx.small_tree()?;
    let glusterd = glusterfs::Glusterd::shared()?;
    let name = format!("georepbench{}", std::process::id());
    let volume = Volume::create(&glusterd, &name, &ctx.fresh("slave-volume"))?;
    let label = "volume small-initial";
    let s = initial_with(
        ctx,
        label,
        &tree.root,
        ctx.sshd.port(),
        &ctx.rsync,
        &[],
        Some(&volume),
    )?;
    Ok(vec![small_row(&s, label, tree)])
}

/// Removes everything inside `dir`.
fn empty(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let p = e?.path();
        let gone = if p.is_dir() && !p.is_symlink() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        gone.with_context(|| format!("removing {}", p.display()))?;
    }
    Ok(())
}

fn small_row(s: &Samples, label: &str, tree: &SmallTree) -> Row {
    let n = tree.files.len() as f64;
    let fps = |v: &[f64]| median(v).map_or(0.0, |t| n / t);
    s.row(
        format!("{label} {}", count(tree.files.len())),
        format!(
            "georep {:.0} files/s, rsync {:.0} files/s",
            fps(&s.georep),
            fps(&s.rsync)
        ),
    )
}

/// `100k`, `1M`.
pub(super) fn count(n: usize) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

pub(super) fn size_label(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

fn big_master(ctx: &Ctx, bytes: u64) -> Result<PathBuf> {
    let master = ctx.fresh("big-master");
    fs::create_dir_all(&master)?;
    progress(&format!("writing a {} random file", size_label(bytes)));
    fixtures::big_file(&master.join("big.bin"), bytes, 2)?;
    Ok(master)
}

pub fn big_initial(ctx: &Ctx) -> Result<Vec<Row>> {
    let bytes = ctx.profile.big_bytes;
    let master = big_master(ctx, bytes)?;
    let s = initial(ctx, "big-initial", &master, ctx.sshd.port(), &ctx.rsync)?;
    let mbs = median(&s.georep).map_or(0.0, |t| bytes as f64 / t / 1e6);
    let pipe = ctx.pipe_mbs.get().map_or(String::new(), |p| {
        format!(" = {:.0}% of the ssh pipe", mbs / p * 100.0)
    });
    let rmbs = median(&s.rsync).map_or(0.0, |t| bytes as f64 / t / 1e6);
    Ok(vec![s.row(
        format!("big-initial {}", size_label(bytes)),
        format!("georep {mbs:.0} MB/s{pipe}, rsync {rmbs:.0} MB/s"),
    )])
}

/// Synced georep session and rsync copy of a big file, then `runs` times:
/// change 1 MiB in the middle, measure both.
fn big_delta_on(ctx: &Ctx, label: &str, bytes: u64, port: u16, rsync: &Rsync) -> Result<Samples> {
    let master = big_master(ctx, bytes)?;
    let file = master.join("big.bin");
    progress(&format!("{label}: first sync (not timed)"));
    let mut geo = synced_session(ctx, &master, port)?;
    let rdst = ctx.fresh("rsync");
    rsync.sync(&master, &rdst)?;
    let mut s = Samples::default();
    let runs = ctx.profile.runs;
    for run in 0..runs {
        let (g, gb, u) = change_and_wait(ctx, &geo, || {
            fixtures::change_middle(&file, ctx.profile.delta_bytes, 100 + run as u64)
        })?;
        s.georep.push(g);
        s.georep_bytes.push(gb);
        s.usage(u);
        let rr = rsync.sync(&master, &rdst)?;
        s.rsync.push(secs(rr.elapsed));
        s.rsync_bytes.push(rr.bytes_sent);
        run_line(
            label,
            run,
            runs,
            g,
            gb,
            Some((secs(rr.elapsed), rr.bytes_sent)),
        );
    }
    verify(&master, geo.slave_dir())?;
    geo.stop();
    Ok(s)
}

fn bytes_ratio(s: &Samples) -> String {
    match (median_u64(&s.georep_bytes), median_u64(&s.rsync_bytes)) {
        (Some(g), Some(r)) if r > 0 => format!("bytes {:.2}x rsync's", g as f64 / r as f64),
        _ => String::new(),
    }
}

pub fn big_delta(ctx: &Ctx) -> Result<Vec<Row>> {
    let bytes = ctx.profile.big_bytes;
    let s = big_delta_on(ctx, "big-delta", bytes, ctx.sshd.port(), &ctx.rsync)?;
    Ok(vec![s.row(
        format!(
            "big-delta {} in {}",
            size_label(ctx.profile.delta_bytes),
            size_label(bytes)
        ),
        bytes_ratio(&s),
    )])
}

pub fn incremental(ctx: &Ctx) -> Result<Vec<Row>> {
    let p = &ctx.profile;
    let mut rows = Vec::new();
    let mut first: Option<f64> = None;
    for &n in &p.incr_trees {
        let label = format!("incremental {} of {}", p.incr_changes, count(n));
        progress(&format!("{label}: building a {n}-file tree"));
        let tree = fixtures::small_tree(&ctx.fresh("incr-master"), n, (n / 100).max(1), 7)?;
        progress(&format!("{label}: first sync of both"));
        // The first sync is a Hybrid Crawl of the whole tree: its peak RSS
        // per file is what the memory target bounds.
        let mut geo = new_session(ctx, &[&tree.root], ctx.sshd.port())?;
        let crawl = UsageProbe::begin(&geo);
        let t_fix = now_ns();
        let t0 = Instant::now();
        geo.start()?;
        let first_sync = secs(wait(&geo, ctx, t_fix)? - t0);
        let crawl = crawl.end(&geo);
        let rdst = ctx.fresh("rsync");
        let rsync_first = secs(ctx.rsync.sync(&tree.root, &rdst)?.elapsed);
        let per_file = crawl.monitor_hwm_kib as f64 * 1024.0 / n as f64;
        let first_note = format!(
            "first sync {} (rsync {}), monitor peak {} = {per_file:.0} B/file",
            fmt_secs(first_sync),
            fmt_secs(rsync_first),
            fmt_bytes(crawl.monitor_hwm_kib * 1024)
        );
        progress(&format!("{label}: {first_note}"));
        let mut s = Samples::default();
        for run in 0..p.runs {
            let (g, gb, u) = change_and_wait(ctx, &geo, || {
                fixtures::change_files(&tree, p.incr_changes, 1000 + run as u64).map(|_| ())
            })?;
            s.georep.push(g);
            s.georep_bytes.push(gb);
            s.usage(u);
            let rr = ctx.rsync.sync(&tree.root, &rdst)?;
            s.rsync.push(secs(rr.elapsed));
            s.rsync_bytes.push(rr.bytes_sent);
            run_line(
                &label,
                run,
                p.runs,
                g,
                gb,
                Some((secs(rr.elapsed), rr.bytes_sent)),
            );
        }
        verify(&tree.root, geo.slave_dir())?;
        geo.stop();
        let g = median(&s.georep).unwrap_or(f64::NAN);
        let note = match first {
            None => {
                first = Some(g);
                first_note
            }
            Some(f) => format!(
                "georep time {:.2}x its time at the first size; {first_note}",
                g / f
            ),
        };
        rows.push(s.row(label, note));
    }
    Ok(rows)
}

/// Polls until `path` exists on the slave with `len` bytes.
fn wait_visible(path: &Path, len: u64, timeout: Duration) -> Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        if fs::symlink_metadata(path).is_ok_and(|m| m.len() == len) {
            return Ok(Instant::now());
        }
        if Instant::now() >= deadline {
            bail!(
                "{} did not appear on the slave within {timeout:?}",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn count_entries(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, |rd| rd.count())
}

pub fn latency(ctx: &Ctx) -> Result<Vec<Row>> {
    let p = &ctx.profile;
    let tree = fixtures::small_tree(&ctx.fresh("lat-master"), p.latency_tree, 10, 9)?;
    progress("latency: first sync of both (not timed)");
    let mut geo = synced_session(ctx, &tree.root, ctx.sshd.port())?;
    let rdst = ctx.fresh("rsync");
    ctx.rsync.sync(&tree.root, &rdst)?;
    let lat_dir = Path::new("lat");
    fs::create_dir(tree.root.join(lat_dir))?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let b0 = geo.bytes_sent()?;
    let probe = UsageProbe::begin(&geo);
    let mut lat = Vec::new();
    for i in 0..p.latency_writes {
        // A random pause, so writes do not fall into step with the rollover.
        let pause = p.latency_pause.as_millis().max(1) as u64;
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..pause)));
        let rel = lat_dir.join(format!("w{i:04}"));
        fixtures::small_file(&tree.root.join(&rel), 1024, i as u64)?;
        let t = Instant::now();
        let seen = wait_visible(&geo.slave_dir().join(&rel), 1024, p.sync_timeout)?;
        lat.push(secs(seen - t));
    }
    let usage = probe.end(&geo);
    let per_write = (geo.bytes_sent()? - b0) / p.latency_writes.max(1) as u64;
    progress(&format!(
        "latency: {} writes: p50 {} p99 {} max {}",
        lat.len(),
        fmt_secs(percentile(&lat, 50.0).unwrap_or(0.0)),
        fmt_secs(percentile(&lat, 99.0).unwrap_or(0.0)),
        fmt_secs(lat.iter().copied().fold(0.0, f64::max)),
    ));
    // rsync's answer to one write: a run over the tree.
    let mut rs = Samples::default();
    for run in 0..p.runs {
        fixtures::small_file(
            &tree.root.join(lat_dir).join(format!("r{run}")),
            1024,
            500 + run as u64,
        )?;
        let rr = ctx.rsync.sync(&tree.root, &rdst)?;
        rs.rsync.push(secs(rr.elapsed));
        rs.rsync_bytes.push(rr.bytes_sent);
    }
    let mut single = Samples {
        georep: lat.clone(),
        georep_bytes: vec![per_write],
        ..Default::default()
    };
    single.rsync = rs.rsync;
    single.rsync_bytes = rs.rsync_bytes;
    single.usage(usage);
    let mut row1 = single.row(
        format!("latency 1 write ({}x)", lat.len()),
        format!(
            "time to visible on the slave; rsync = one run over the {}-file tree",
            count(p.latency_tree)
        ),
    );
    row1.p50_s = percentile(&lat, 50.0);
    row1.p99_s = percentile(&lat, 99.0);

    // Bursts: N new files as fast as possible, then until all are visible.
    let mut s = Samples::default();
    let mut stime_t = Vec::new();
    for run in 0..p.runs {
        let rel = PathBuf::from(format!("burst{run}"));
        let dir = tree.root.join(&rel);
        let b0 = geo.bytes_sent()?;
        let probe = UsageProbe::begin(&geo);
        fs::create_dir(&dir)?;
        for i in 0..p.burst_files {
            fixtures::small_file(&dir.join(format!("b{i:05}")), 1024, i as u64)?;
        }
        let t_done = now_ns();
        let t = Instant::now();
        let slave_dir = geo.slave_dir().join(&rel);
        let deadline = t + p.sync_timeout;
        while count_entries(&slave_dir) < p.burst_files {
            if Instant::now() >= deadline {
                bail!("burst {run} did not fully arrive on the slave");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let visible = secs(t.elapsed());
        let seen = wait(&geo, ctx, t_done)?;
        s.usage(probe.end(&geo));
        stime_t.push(secs(seen - t));
        s.georep.push(visible);
        let gb = geo.bytes_sent()? - b0;
        s.georep_bytes.push(gb);
        let rr = ctx.rsync.sync(&tree.root, &rdst)?;
        s.rsync.push(secs(rr.elapsed));
        s.rsync_bytes.push(rr.bytes_sent);
        run_line(
            "latency burst",
            run,
            p.runs,
            visible,
            gb,
            Some((secs(rr.elapsed), rr.bytes_sent)),
        );
    }
    verify(&tree.root, geo.slave_dir())?;
    geo.stop();
    let row2 = s.row(
        format!("latency burst {}", count(p.burst_files)),
        format!(
            "all visible on the slave; stime past the burst after {}",
            fmt_secs(median(&stime_t).unwrap_or(0.0))
        ),
    );
    Ok(vec![row1, row2])
}

/// How old the files of the renamed directory are at the first rename.
const STORM_AGE: Duration = Duration::from_secs(11);

pub fn rename_storm(ctx: &Ctx) -> Result<Vec<Row>> {
    let p = &ctx.profile;
    let (master, tree, written) = ctx.storm_tree()?;
    progress("rename-storm: first sync of both (not timed)");
    let mut geo = synced_session(ctx, &master, ctx.sshd.port())?;
    let rdst = ctx.fresh("rsync");
    ctx.rsync.sync(&master, &rdst)?;
    // The journal hook re-records everything under a renamed directory whose
    // ctime is within 10 s of the rename (changelog::hook's
    // RENAME_RESCAN_MARGIN), so a directory renamed right after its files
    // were written is sent again in full. The scenario renames an
    // established directory: let the files age past that margin first.
    let aged = written + STORM_AGE;
    if let Some(left) = aged.checked_duration_since(Instant::now()) {
        progress(&format!(
            "rename-storm: waiting {} so the files are older than the hook's rename rescan margin",
            fmt_secs(secs(left))
        ));
        std::thread::sleep(left);
    }
    // The tree's single directory holds every file: tNN/dNNNN.
    let inner = tree.files[0]
        .parent()
        .context("files sit in a directory")?
        .to_path_buf();

    let mut dir_s = Samples::default();
    for run in 0..p.runs {
        let from = master.join(format!("storm{run}"));
        let to = master.join(format!("storm{}", run + 1));
        let (g, gb, u) = change_and_wait(ctx, &geo, || {
            fs::rename(&from, &to).context("renaming the storm directory")
        })?;
        dir_s.georep.push(g);
        dir_s.georep_bytes.push(gb);
        dir_s.usage(u);
        let rr = ctx.rsync.sync(&master, &rdst)?;
        dir_s.rsync.push(secs(rr.elapsed));
        dir_s.rsync_bytes.push(rr.bytes_sent);
        run_line(
            "rename dir",
            run,
            p.runs,
            g,
            gb,
            Some((secs(rr.elapsed), rr.bytes_sent)),
        );
    }
    let pct = median_u64(&dir_s.georep_bytes).unwrap_or(0) as f64 / tree.bytes as f64 * 100.0;
    let row1 = dir_s.row(
        format!("rename-storm dir of {}", count(p.storm_files)),
        format!(
            "georep sent {pct:.3}% of the tree ({})",
            fmt_bytes(tree.bytes)
        ),
    );

    let cur = master.join(format!("storm{}", p.runs)).join(&inner);
    let mut file_s = Samples::default();
    let n = p.storm_one_by_one.min(tree.files.len());
    for run in 0..p.runs {
        let names: Vec<PathBuf> = tree.files[..n]
            .iter()
            .filter_map(|f| f.file_name().map(PathBuf::from))
            .collect();
        let (g, gb, u) = change_and_wait(ctx, &geo, || {
            for name in &names {
                let mut old = name.as_os_str().to_owned();
                let mut new = old.clone();
                if run > 0 {
                    old.push(format!(".r{run}"));
                }
                new.push(format!(".r{}", run + 1));
                fs::rename(cur.join(&old), cur.join(&new))
                    .with_context(|| format!("renaming {}", cur.join(&old).display()))?;
            }
            Ok(())
        })?;
        file_s.georep.push(g);
        file_s.georep_bytes.push(gb);
        file_s.usage(u);
        let rr = ctx.rsync.sync(&master, &rdst)?;
        file_s.rsync.push(secs(rr.elapsed));
        file_s.rsync_bytes.push(rr.bytes_sent);
        run_line(
            "rename files",
            run,
            p.runs,
            g,
            gb,
            Some((secs(rr.elapsed), rr.bytes_sent)),
        );
    }
    verify(&master, geo.slave_dir())?;
    geo.stop();
    let row2 = file_s.row(
        format!("rename-storm {} files 1 by 1", count(n)),
        format!(
            "georep {:.0} B per rename",
            median_u64(&file_s.georep_bytes).unwrap_or(0) as f64 / n.max(1) as f64
        ),
    );
    Ok(vec![row1, row2])
}

pub fn wan(ctx: &Ctx) -> Result<Vec<Row>> {
    let p = &ctx.profile;
    let shape = LinkShape::wan();
    progress(
        "wan: this kernel has no sch_netem (tc netem: \"Specified qdisc kind is unknown\"), \
         so a user-space relay on 127.0.0.1 adds 25 ms each way and shapes to 200 Mbit/s",
    );
    let relay = Relay::start(ctx.sshd.port(), shape)?;
    let rsync = Rsync::new(&ctx.sshd, relay.port(), Some(&ctx.rsync_cipher));
    let pipe_bytes = (64u64 << 20).min(p.pipe_bytes / 4);
    let pipe = limits::ssh_pipe(&ctx.sshd, relay.port(), &ctx.rsync_cipher, pipe_bytes)?;
    let pipe_mbs = pipe_bytes as f64 / secs(pipe) / 1e6;
    progress(&format!(
        "wan: ssh pipe through the relay: {pipe_mbs:.1} MB/s (link: {:.1} MB/s)",
        shape.bits_per_sec as f64 / 8e6
    ));
    let mut rows = Vec::new();

    let n = p.wan_small_files;
    let tree = fixtures::small_tree(&ctx.fresh("wan-small-master"), n, (n / 100).max(1), 21)?;
    let s = initial(ctx, "wan small-initial", &tree.root, relay.port(), &rsync)?;
    let mut row = small_row(&s, "wan small-initial", &tree);
    row.note
        .push_str(&format!("; ssh pipe over the link {pipe_mbs:.1} MB/s"));
    rows.push(row);

    let s = big_delta_on(ctx, "wan big-delta", p.wan_big_bytes, relay.port(), &rsync)?;
    let link =
        |b: Option<u64>| b.map_or(0.0, |b| b as f64 * 8.0 / shape.bits_per_sec as f64 + 0.05);
    rows.push(s.row(
        format!(
            "wan big-delta {} in {}",
            size_label(p.delta_bytes),
            size_label(p.wan_big_bytes)
        ),
        format!(
            "{}; link time for georep's bytes {}, for rsync's {}",
            bytes_ratio(&s),
            fmt_secs(link(median_u64(&s.georep_bytes))),
            fmt_secs(link(median_u64(&s.rsync_bytes)))
        ),
    ));
    rows.extend(wan_text(ctx, &relay, shape)?);
    drop(relay);
    Ok(rows)
}

/// Log-like text over the link, with georep's `compression` zstd (the
/// default) and none, against `rsync -z`: what compression buys on a WAN.
fn wan_text(ctx: &Ctx, relay: &Relay, shape: LinkShape) -> Result<Vec<Row>> {
    const FILES: u64 = 8;
    let bytes = ctx.profile.wan_big_bytes;
    let master = ctx.fresh("wan-text-master");
    fs::create_dir_all(&master)?;
    progress(&format!(
        "writing {} of log text in {FILES} files",
        size_label(bytes)
    ));
    for i in 0..FILES {
        let text = crate::log_text((bytes / FILES) as usize, 40 + i);
        fs::write(master.join(format!("log{i}.txt")), text)?;
    }
    let rsync = Rsync::new(&ctx.sshd, relay.port(), Some(&ctx.rsync_cipher)).compressed();
    let link = |b: Option<u64>| b.map_or(0.0, |b| b as f64 * 8.0 / shape.bits_per_sec as f64);
    let mut rows = Vec::new();
    for compression in ["zstd", "none"] {
        let label = format!("wan text-initial compression {compression}");
        let s = initial_with(
            ctx,
            &label,
            &master,
            relay.port(),
            &rsync,
            &[("compression", compression)],
            None,
        )?;
        rows.push(s.row(
            format!("{label} {}", size_label(bytes)),
            format!(
                "rsync -z; {}; link time for georep's bytes {}",
                bytes_ratio(&s),
                fmt_secs(link(median_u64(&s.georep_bytes)))
            ),
        ));
    }
    Ok(rows)
}
