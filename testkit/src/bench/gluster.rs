//! `georep-bench gluster`: georep beside GlusterFS's own geo-replication
//! (gsyncd) on one real volume, written through its FUSE mount and
//! replicated by both at once, each reading the same brick's changelogs:
//! gsyncd into a second volume, georep into a directory, both over the
//! bench's sshd through a relay that counts the bytes each sends.
//!
//! gsyncd reads its session files under `/var/lib/glusterd` whatever
//! glusterd's working directory, so this needs a glusterd on the system's
//! working directory ([`Glusterd::system`]); the brick host name must
//! resolve. Its key goes into the bench sshd's own `authorized_keys`;
//! `~/.ssh` is never touched.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::glusterfs::{self, gluster, Glusterd, Volume};
use crate::{compare_trees, CompareOptions};
use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};

use super::fixtures;
use super::geo::{now_ns, Geo};
use super::relay::{LinkShape, Relay};
use super::stats::{fmt_bytes, fmt_secs, median, percentile, secs};
use super::{progress, Ctx, Row};

/// `--remote-option=--insecure-links`: without it Debian 12's rsync skips
/// every file gsyncd gives it and still exits 0. Given in its
/// short form because the `gluster` CLI takes any argument starting with
/// `--` for one of its own options.
const GSYNCD_RSYNC_OPTIONS: &str = "-M--insecure-links";

/// A GlusterFS geo-replication session, stopped and deleted when dropped.
struct Gsyncd {
    master: String,
    slave: String,
}

impl Gsyncd {
    fn georep(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["volume", "geo-replication", &self.master, &self.slave];
        all.extend_from_slice(args);
        Ok(gluster(&all)?)
    }

    /// Creates and starts the session; its ssh goes to `port`, where the
    /// bench sshd (through a relay) holds glusterd's common key.
    fn start(master: &str, host: &str, slave: &str, port: u16, keys: &Path) -> Result<Gsyncd> {
        gluster(["system::", "execute", "gsec_create"])?;
        let pem = "/var/lib/glusterd/geo-replication/common_secret.pem.pub";
        let key = fs::read_to_string(pem).with_context(|| format!("reading {pem}"))?;
        let mut authorized = fs::read_to_string(keys)?;
        authorized.push_str(&key);
        fs::write(keys, authorized).with_context(|| format!("writing {}", keys.display()))?;
        let s = Gsyncd {
            master: master.to_owned(),
            slave: format!("{host}::{slave}"),
        };
        let port = port.to_string();
        s.georep(&["create", "ssh-port", &port, "no-verify"])?;
        s.georep(&["config", "ssh-port", &port])?;
        s.georep(&["config", "rsync-options", GSYNCD_RSYNC_OPTIONS])?;
        s.georep(&["start"])?;
        Ok(s)
    }
}

impl Drop for Gsyncd {
    fn drop(&mut self) {
        let _ = self.georep(&["stop", "force"]);
        let _ = self.georep(&["delete"]);
    }
}

/// Names and sizes of everything under `root`: the cheap check run before
/// a full comparison.
fn shape(root: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(root.join(&rel))
            .into_iter()
            .flatten()
            .flatten()
        {
            let r = rel.join(e.file_name());
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(r.clone());
            }
            out.insert(r, if m.is_file() { m.len() } else { 0 });
        }
    }
    out
}

/// Polls each slave's `sub` until it equals the mount's (names and sizes,
/// then contents, modes and file mtimes); returns, per slave, the time
/// from `t0` to the check that found it equal, or the differences left
/// when `timeout` ran out.
fn until_equal(
    mount: &Path,
    slaves: [&Path; 2],
    sub: &str,
    t0: Instant,
    timeout: Duration,
) -> [std::result::Result<f64, String>; 2] {
    let master = mount.join(sub);
    let want = shape(&master);
    let opts = CompareOptions::default().without_dir_mtime();
    let mut done: [Option<f64>; 2] = [None, None];
    loop {
        for (i, slave) in slaves.iter().enumerate() {
            if done[i].is_some() {
                continue;
            }
            let checked = Instant::now();
            let dir = slave.join(sub);
            if shape(&dir) == want && compare_trees(&master, &dir, &opts).is_empty() {
                done[i] = Some(secs(checked - t0));
            }
        }
        if done.iter().all(Option::is_some) || t0.elapsed() >= timeout {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let result = |i: usize| {
        done[i].ok_or_else(|| {
            let diffs = compare_trees(&master, &slaves[i].join(sub), &opts);
            let shown: Vec<String> = diffs.iter().take(3).map(|d| d.to_string()).collect();
            format!(
                "not equal after {}: {} difference(s), e.g. {}",
                fmt_secs(secs(timeout)),
                diffs.len(),
                shown.join("; ")
            )
        })
    };
    [result(0), result(1)]
}

/// Both tools' relays' byte counts.
fn sent(relays: &[Relay; 2]) -> [u64; 2] {
    [relays[0].bytes_sent(), relays[1].bytes_sent()]
}

/// One row from georep's and gsyncd's outcomes.
fn row(label: String, t: [std::result::Result<f64, String>; 2], b0: [u64; 2], b1: [u64; 2]) -> Row {
    let mut note =
        "peer: GlusterFS geo-replication (gsyncd); ssh bytes through each relay".to_owned();
    for (who, r) in ["georep", "gsyncd"].iter().zip(&t) {
        if let Err(e) = r {
            note.push_str(&format!("; {who} {e}"));
        }
    }
    Row {
        workload: label,
        georep_s: t[0].as_ref().ok().copied(),
        rsync_s: t[1].as_ref().ok().copied(),
        georep_bytes: Some(b1[0] - b0[0]),
        rsync_bytes: Some(b1[1] - b0[1]),
        note,
        ..Default::default()
    }
}

/// Waits until gsyncd's status shows its worker in Changelog Crawl and
/// georep's first (empty) sync is done.
fn until_active(gsyncd: &Gsyncd, geo: &Geo, timeout: Duration) -> Result<()> {
    let t = now_ns();
    let deadline = Instant::now() + timeout;
    loop {
        let status = gsyncd.georep(&["status"])?;
        if status.contains("Changelog Crawl") {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "GlusterFS geo-replication is not in Changelog Crawl after {timeout:?}:\n{status}"
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    geo.wait_stime_past(t, timeout)?;
    Ok(())
}

pub fn gluster_side_by_side(ctx: &Ctx) -> Result<Vec<Row>> {
    if let Some(why) = glusterfs::unavailable() {
        bail!("{why}");
    }
    let p = &ctx.profile;
    let glusterd = Arc::new(Glusterd::system()?);
    let id = std::process::id();
    let master = Volume::create(&glusterd, &format!("gbm{id}"), &ctx.fresh("gb-master"))?;
    let slave = Volume::create(&glusterd, &format!("gbs{id}"), &ctx.fresh("gb-slave"))?;
    let relays = [
        Relay::start(ctx.sshd.port(), LinkShape::unshaped())?,
        Relay::start(ctx.sshd.port(), LinkShape::unshaped())?,
    ];
    let gsyncd = Gsyncd::start(
        &master.name,
        glusterd.host(),
        &slave.name,
        relays[1].port(),
        ctx.sshd.authorized_keys(),
    )?;
    let mut geo = Geo::create(
        &ctx.geo_rep,
        &ctx.fresh("gb-home"),
        &[&master.brick],
        &ctx.fresh("gb-georep-slave"),
        &ctx.sshd,
        relays[0].port(),
    )?;
    geo.start()?;
    progress("gluster: waiting until both sessions are active");
    until_active(&gsyncd, &geo, p.sync_timeout)?;
    let slaves = [geo.slave_dir().to_path_buf(), slave.mount.clone()];
    let slaves = [slaves[0].as_path(), slaves[1].as_path()];
    let m = &master.mount;
    let mut rows = Vec::new();

    let n = p.gluster_files;
    progress(&format!("gluster: {n} small files through the mount"));
    let b0 = sent(&relays);
    let t0 = Instant::now();
    fixtures::small_tree(&m.join("small"), n, n.div_ceil(100), 21)?;
    let written = secs(t0.elapsed());
    let t = until_equal(m, slaves, "small", Instant::now(), p.gluster_timeout);
    progress(&format!(
        "gluster small: written in {}; {t:?}",
        fmt_secs(written)
    ));
    rows.push(row(
        format!("gluster {} files", super::workloads::count(n)),
        t,
        b0,
        sent(&relays),
    ));

    let big = p.gluster_big_bytes;
    progress(&format!("gluster: one file of {}", fmt_bytes(big)));
    let b0 = sent(&relays);
    fs::create_dir(m.join("big"))?;
    fixtures::big_file(&m.join("big/file"), big, 22)?;
    let t = until_equal(m, slaves, "big", Instant::now(), p.gluster_timeout);
    progress(&format!("gluster big: {t:?}"));
    rows.push(row(
        format!("gluster {} file", super::workloads::size_label(big)),
        t,
        b0,
        sent(&relays),
    ));

    rows.push(lag(ctx, m, slaves, &relays)?);
    drop(gsyncd);
    geo.stop();
    Ok(rows)
}

/// Writes a tool may miss before the rest are not waited for.
const GIVE_UP: usize = 2;

/// Single 1 KiB writes through the mount, each after a random pause of up
/// to one rollover, until each slave shows the file whole.
fn lag(ctx: &Ctx, m: &Path, slaves: [&Path; 2], relays: &[Relay; 2]) -> Result<Row> {
    let p = &ctx.profile;
    fs::create_dir(m.join("lag"))?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(23);
    let mut lags: [Vec<f64>; 2] = Default::default();
    let mut missed = [0usize; 2];
    let b0 = sent(relays);
    for i in 0..p.latency_writes {
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..1000)));
        let rel = format!("lag/w{i:04}");
        fixtures::small_file(&m.join(&rel), 1024, i as u64)?;
        let t = Instant::now();
        // A tool that missed writes before is not waited for again: once
        // it lost the directory, every later write would cost the timeout.
        let mut seen = missed.map(|n| n >= GIVE_UP);
        let skipped = seen;
        while !seen.iter().all(|s| *s) && t.elapsed() < p.gluster_lag_timeout {
            for (k, slave) in slaves.iter().enumerate() {
                if !seen[k] && fs::metadata(slave.join(&rel)).is_ok_and(|md| md.len() == 1024) {
                    seen[k] = true;
                    lags[k].push(secs(t.elapsed()));
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for k in 0..2 {
            missed[k] += usize::from(!seen[k] || skipped[k]);
        }
    }
    let b1 = sent(relays);
    let pct = |v: &[f64], q| percentile(v, q).map_or("-".into(), fmt_secs);
    progress(&format!(
        "gluster lag: georep p50 {} p99 {}, gsyncd p50 {} p99 {}; missed {missed:?}",
        pct(&lags[0], 50.0),
        pct(&lags[0], 99.0),
        pct(&lags[1], 50.0),
        pct(&lags[1], 99.0),
    ));
    let outcome = |k: usize| {
        if missed[k] > 0 {
            Err(format!(
                "missed {} of {} writes (waited {} for each of the first {GIVE_UP})",
                missed[k],
                p.latency_writes,
                fmt_secs(secs(p.gluster_lag_timeout))
            ))
        } else {
            median(&lags[k]).ok_or_else(|| "no writes".to_owned())
        }
    };
    let mut r = row(
        format!("gluster lag 1 write ({}x)", p.latency_writes),
        [outcome(0), outcome(1)],
        b0,
        b1,
    );
    r.p50_s = percentile(&lags[0], 50.0);
    r.p99_s = percentile(&lags[0], 99.0);
    r.note = format!(
        "median lag; p50/p99 georep's, gsyncd's p50 {} p99 {}; {}",
        pct(&lags[1], 50.0),
        pct(&lags[1], 99.0),
        r.note
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_sees_names_and_sizes_below_the_root() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        for d in [&a, &b] {
            fs::create_dir_all(d.join("sub")).unwrap();
            fs::write(d.join("sub/f"), b"abc").unwrap();
        }
        assert_eq!(shape(&a), shape(&b));
        assert_eq!(shape(&a).get(Path::new("sub/f")), Some(&3));
        fs::write(b.join("sub/f"), b"ab").unwrap();
        assert_ne!(shape(&a), shape(&b));
        fs::write(b.join("sub/f"), b"abc").unwrap();
        fs::write(b.join("extra"), b"").unwrap();
        assert_ne!(shape(&a), shape(&b));
    }
}
