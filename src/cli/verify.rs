//! `geo-rep verify MASTERVOL SLAVE [--quick] [--json] [--rate BYTES]`:
//! compares the master volume, read through one brick per distribute leg
//! (see `verify_legs`), with the slave (see `crate::verify`) and prints
//! each difference. Exit 0 when equal (differences in flight aside), 1
//! when anything differs.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{bail, Context};

use super::find_session;
use super::lifecycle::runtime;
use super::{Home, UsageError};
use crate::crawl::journal::ChangeSource;
use crate::monitor::plan;
use crate::session::{SlaveUrl, VolumeName};
use crate::verify::{self, Brick, Counts, Finding, Options, What};

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
    /// Resend what differs, then compare again (see `repair`).
    pub repair: bool,
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
    let legs = read_legs(&state, &session, &plan)
        .map_err(|why| UsageError(format!("cannot verify {vol} -> {slave}: {why}")))?;
    if args.repair {
        let running = super::lifecycle::monitor_alive(session.monitor_pid)
            && session.state != crate::state::SessionState::Paused;
        if running {
            return Err(UsageError(format!(
                "verify --repair ships beside the session's workers: pause or stop {vol} -> {slave} first"
            ))
            .into());
        }
    }
    let live = plan.live(&state);
    let filter = live.filter.clone();
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
    let bricks: Vec<Brick> = legs
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
    // What the quick check of a repair cannot see: same size and mtime.
    let mut whole: Vec<crate::relpath::RelPath> = Vec::new();
    let mut out = std::io::stdout().lock();
    let mut found = |f: &Finding| {
        if !f.in_flight && matches!(f.what, What::Content | What::HardLinks) {
            if let Ok(p) = crate::relpath::RelPath::new(f.path.as_str()) {
                whole.push(p);
            }
        }
        if args.json {
            findings.push(f.clone());
        } else {
            if tty {
                eprint!("\r\x1b[K");
            }
            let line = f.to_string();
            let _ = writeln!(out, "{}", crate::terminal::escape_controls(&line));
        }
    };
    let mut progress = |c: &Counts| {
        if tty {
            eprint!(
                "\r\x1b[Kverify: {} directories, {} entries, {} differences, {} in flight",
                c.dirs, c.entries, c.differences, c.in_flight
            );
        }
    };
    let rt = runtime()?;
    let cannot = || format!("cannot verify {vol} -> {slave}");
    let (conn, mut link) = rt.block_on(plan.connect_streams(1)).with_context(cannot)?;
    let mut result = rt.block_on(verify::verify(
        &mut link,
        &bricks,
        &filter,
        &opts,
        &mut found,
        &mut progress,
    ));
    if let (true, Ok(first)) = (args.repair, &result) {
        if first.differences > 0 {
            if tty {
                eprint!("\r\x1b[K");
            }
            let done = rt.block_on(super::repair::repair(&mut link, &legs, &live, &whole))?;
            println!(
                "repair: resent {} files, {} bytes{}; comparing again",
                done.files,
                done.bytes,
                match done.failures.first() {
                    Some(f) => format!(" ({} failures, the first: {f})", done.failures.len()),
                    None => String::new(),
                }
            );
            findings.clear();
            result = rt.block_on(verify::verify(
                &mut link,
                &bricks,
                &filter,
                &opts,
                &mut |f| {
                    if args.json {
                        findings.push(f.clone());
                    } else {
                        let line = format!("after repair: {f}");
                        println!("{}", crate::terminal::escape_controls(&line));
                    }
                },
                &mut progress,
            ));
        }
    }
    rt.block_on(async {
        link.close().await;
        conn.close().await;
    });
    let counts: Counts = result.with_context(cannot)?;
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

/// The bricks the volume is read through, one a distribute leg (see
/// `verify_legs`), from what `gluster` says of a GlusterFS volume now:
/// its shape (else the one recorded at `create`), which brick processes
/// run and which bricks hold pending heals; and which members the
/// running monitor made Active.
fn read_legs<'p>(
    state: &crate::state::State,
    session: &crate::state::SessionRecord,
    plan: &'p crate::monitor::SessionPlan,
) -> Result<Vec<&'p crate::monitor::BrickPlan>, String> {
    let vol = session.master_vol.as_str();
    let asked = plan.topology.is_some() && crate::volume::gluster_present();
    let now = match asked.then(|| crate::volume::volume_info(vol)) {
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            // Its shape cannot have changed without glusterd.
            eprintln!("geo-rep: note: {e}: {vol} is read with the shape recorded at create");
            plan.topology.clone()
        }
        None => plan.topology.clone(),
    };
    let running = super::lifecycle::monitor_alive(session.monitor_pid);
    let rows = state.bricks(session.id).map_err(|e| e.to_string())?;
    let active = |b: &crate::monitor::BrickPlan| {
        running
            && rows
                .iter()
                .any(|r| r.id == b.brick_id && r.status == crate::state::WorkerStatus::Active)
    };
    let sets = plan.bricks.iter().any(|b| b.set.is_some());
    // Unknown (no gluster CLI, or it cannot tell): the brick is read if
    // its directory can be.
    let status = if sets && asked {
        crate::volume::brick_status(vol).ok()
    } else {
        None
    };
    let online = |path: &std::path::Path| match &status {
        Some(states) => states
            .iter()
            .any(|s| s.path == path && s.online && crate::volume::is_local(&s.host)),
        None => std::fs::read_dir(path).is_ok(),
    };
    let heals = if sets && asked {
        crate::volume::heal_summary(vol).ok()
    } else {
        None
    };
    let pending = |path: &std::path::Path| {
        heals
            .as_ref()?
            .iter()
            .find(|h| h.path == path && crate::volume::is_local(&h.host))?
            .pending
    };
    let health = super::verify_legs::Health {
        active: &active,
        online: &online,
        pending: &pending,
    };
    let legs =
        super::verify_legs::legs(&plan.bricks, now.as_ref(), plan.topology.as_ref(), &health)?;
    for note in &legs.notes {
        eprintln!("geo-rep: note: {note}");
    }
    Ok(legs.bricks)
}
