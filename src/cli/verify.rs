//! `geo-rep verify MASTERVOL SLAVE [--quick] [--json] [--rate BYTES]`:
//! compares the session's bricks with the slave (see `crate::verify`) and
//! prints each difference. Exit 0 when equal (differences in flight
//! aside), 1 when anything differs.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{bail, Context};

use super::find_session;
use super::lifecycle::runtime;
use super::{Home, UsageError};
use crate::crawl::journal::ChangeSource;
use crate::monitor::plan;
use crate::session::{SlaveUrl, VolumeName};
use crate::verify::{self, Brick, Counts, Finding, Options};

/// How far behind its stime a change on the master may carry a ctime (the
/// kernel stamps ctimes from a coarse clock, georep its journal from a
/// fine one): changes this close to the stime count as in flight.
const CLOCK_MARGIN: Duration = Duration::from_secs(2);

pub struct VerifyArgs {
    pub quick: bool,
    pub json: bool,
    pub rate: u64,
    /// Nothing can be in flight (the session is stopped and the slave
    /// takes no writes, as in failback's switch): every difference counts.
    pub settled: bool,
}

pub fn verify(
    home: &Home,
    vol: &VolumeName,
    slave: &SlaveUrl,
    args: VerifyArgs,
) -> anyhow::Result<()> {
    let state = home.state()?;
    let session = find_session(&state, vol, slave)?;
    let plan = plan(home, &session)?;
    // The walk reads every brick as its own part of the volume: right for
    // plain directories and one GlusterFS brick. A replica set's members
    // (an arbiter's empty files, a stale member that was down) or a
    // distributed volume's bricks would be compared as if each were the
    // volume, so an answer there is not to be trusted yet.
    if let Some((b, set)) = plan
        .bricks
        .iter()
        .find_map(|b| b.set.as_ref().map(|set| (b, set)))
    {
        return Err(UsageError(format!(
            "verify does not handle replica sets yet: brick {} of {vol} is a member of {}",
            b.brick.display(),
            set.name
        ))
        .into());
    }
    if plan.bricks.iter().filter(|b| b.gluster).count() > 1 {
        return Err(UsageError(format!(
            "verify does not handle a GlusterFS volume of several bricks yet ({vol} -> {slave} has {})",
            plan.bricks.len()
        ))
        .into());
    }
    let filter = plan.live(&state).filter;
    // The point every brick's changes are known to be on the slave.
    let stimes: Vec<_> = state.bricks(session.id)?.iter().map(|b| b.stime).collect();
    let cutoff = stimes
        .iter()
        .copied()
        .collect::<Option<Vec<_>>>()
        .and_then(|s| s.into_iter().min());
    let cutoff_ns = match cutoff {
        _ if args.settled => i64::MAX,
        Some(s) => s.minus(CLOCK_MARGIN).nanos(),
        None => {
            eprintln!("geo-rep: note: a brick of {vol} -> {slave} has not synced yet: every difference counts as in flight");
            i64::MIN
        }
    };
    let bricks: Vec<Brick> = plan
        .bricks
        .iter()
        .map(|b| {
            Brick::open(
                b.brick.clone(),
                matches!(b.source, ChangeSource::Glusterfs(_)),
            )
        })
        .collect();
    let opts = Options {
        content: !args.quick,
        rate: args.rate,
        // As the shipper: owners are sent when the master runs as root.
        owners: rustix::process::geteuid().is_root(),
        cutoff_ns,
    };
    let tty = std::io::stderr().is_terminal() && !args.json;
    let mut findings: Vec<Finding> = Vec::new();
    let counts: Counts = runtime()?
        .block_on(async {
            let (conn, mut link) = plan.connect_streams(1).await?;
            let mut out = std::io::stdout().lock();
            let result = verify::verify(
                &mut link,
                &bricks,
                &filter,
                &opts,
                &mut |f| {
                    if args.json {
                        findings.push(f.clone());
                    } else {
                        if tty {
                            eprint!("\r\x1b[K");
                        }
                        let line = f.to_string();
                        let _ = writeln!(out, "{}", crate::terminal::escape_controls(&line));
                    }
                },
                &mut |c| {
                    if tty {
                        eprint!(
                            "\r\x1b[Kverify: {} directories, {} entries, {} differences, {} in flight",
                            c.dirs, c.entries, c.differences, c.in_flight
                        );
                    }
                },
            )
            .await;
            link.close().await;
            conn.close().await;
            anyhow::Ok(result?)
        })
        .with_context(|| format!("cannot verify {vol} -> {slave}"))?;
    if tty {
        eprint!("\r\x1b[K");
    }
    if args.json {
        let doc = serde_json::json!({
            "master_vol": vol.as_str(),
            "slave": slave.to_string(),
            "equal": counts.differences == 0,
            "counts": counts,
            "findings": findings,
        });
        println!("{doc:#}");
    } else {
        println!(
            "{} directories, {} entries compared{}: {} differences, {} in flight",
            counts.dirs,
            counts.entries,
            if args.quick { " (metadata only)" } else { "" },
            counts.differences,
            counts.in_flight
        );
    }
    if counts.differences > 0 {
        bail!(
            "{vol} -> {slave}: the slave differs from the master ({} differences)",
            counts.differences
        );
    }
    Ok(())
}
