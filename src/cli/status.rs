//! `geo-rep status [MASTERVOL [SLAVE]] [detail] [--json]`: GlusterFS's table.

use serde::{Deserialize, Serialize};

use super::lifecycle::monitor_alive;
use super::Home;
use crate::changelog::pending::{pending, Pending};
use crate::crawl::journal::journal_dir;
use crate::meta::{MetaVolume, NodeReport, SessionMeta};
use crate::session::{SlaveUrl, Stime, Timestamp, VolumeName};
use crate::state::{BrickRecord, CrawlStatus, SessionRecord, SessionState, WorkerStatus};

/// The latest Hybrid Crawl of a brick, with its rate.
#[derive(Debug, Serialize, Deserialize)]
struct Progress {
    started: String,
    started_epoch: i64,
    /// null while it runs.
    finished: Option<String>,
    finished_epoch: Option<i64>,
    running: bool,
    files_synced: u64,
    bytes_sent: u64,
    files_per_second: f64,
    bytes_per_second: f64,
    /// Files and bytes the crawl has to ship in all: null until counted
    /// (a walk beside the crawl).
    total_files: Option<u64>,
    total_bytes: Option<u64>,
    /// Share of `total_files` shipped, 0..=100.
    percent: Option<f64>,
    /// Seconds left at the rate so far (0 once finished; null until counted
    /// and the first file shipped).
    eta_seconds: Option<f64>,
    /// The same in words, as `status detail` prints it.
    summary: String,
}

/// The session's checkpoint as every row of the session shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Checkpoint {
    checkpoint_time: Option<String>,
    checkpoint_epoch: Option<i64>,
    checkpoint_completed: bool,
    checkpoint_completion_time: Option<String>,
    checkpoint_completion_epoch: Option<i64>,
}

fn checkpoint(s: &SessionRecord) -> Checkpoint {
    Checkpoint {
        checkpoint_time: s.checkpoint.map(rfc3339),
        checkpoint_epoch: s.checkpoint.map(Timestamp::secs),
        checkpoint_completed: s.checkpoint_completed.is_some(),
        checkpoint_completion_time: s.checkpoint_completed.map(rfc3339),
        checkpoint_completion_epoch: s.checkpoint_completed.map(Timestamp::secs),
    }
}

/// One row: a brick of a session. Field names are the `--json` keys.
#[derive(Debug, Serialize, Deserialize)]
struct Row {
    master_node: String,
    master_vol: String,
    master_brick: String,
    slave_user: String,
    slave: String,
    slave_node: String,
    status: String,
    crawl_status: String,
    /// RFC 3339, or null before the first sync.
    last_synced: Option<String>,
    /// stime in whole seconds since the epoch.
    last_synced_epoch: Option<i64>,
    /// Nanoseconds since the epoch: every change before it is on the slave.
    stime_ns: Option<i64>,
    /// Seconds between now and stime (how far the slave is behind).
    lag_seconds: Option<f64>,
    last_error: Option<String>,
    bytes_sent: u64,
    entries_synced: u64,
    data_synced: u64,
    meta_synced: u64,
    failures: u64,
    /// Journal records not yet on the slave (null: no journal yet).
    pending_entry: Option<u64>,
    pending_data: Option<u64>,
    pending_meta: Option<u64>,
    pending_exact: bool,
    #[serde(flatten)]
    checkpoint: Checkpoint,
    /// The latest Hybrid Crawl (null if none ran).
    crawl_progress: Option<Progress>,
    /// The GlusterFS subvolume (replica set) of the brick, null for a brick
    /// of no set.
    subvolume: Option<String>,
    /// The brick is the arbiter of its replica set.
    arbiter: bool,
    /// For a row of another node, read from the meta-volume: when that
    /// node last reported it (RFC 3339); null for this node's own rows.
    #[serde(default)]
    last_seen: Option<String>,
}

fn row(
    node: &str,
    s: &SessionRecord,
    b: &BrickRecord,
    alive: bool,
    pending: Option<Pending>,
) -> Row {
    let (status, crawl, error) = match s.state {
        SessionState::Created => (
            WorkerStatus::Created.to_string(),
            "N/A".to_string(),
            b.last_error.clone(),
        ),
        SessionState::Stopped => (
            WorkerStatus::Stopped.to_string(),
            "N/A".to_string(),
            b.last_error.clone(),
        ),
        SessionState::Paused => (
            WorkerStatus::Paused.to_string(),
            "N/A".to_string(),
            b.last_error.clone(),
        ),
        SessionState::Started if alive => (
            b.status.to_string(),
            b.crawl.to_string(),
            b.last_error.clone(),
        ),
        SessionState::Started => (
            WorkerStatus::Faulty.to_string(),
            "N/A".to_string(),
            Some("the monitor process is not running; run `geo-rep start … force`".to_string()),
        ),
    };
    let now = Timestamp::now();
    Row {
        master_node: node.to_owned(),
        master_vol: s.master_vol.to_string(),
        master_brick: b.brick.to_string(),
        slave_user: s.slave.user.clone(),
        slave: format!("ssh://{}", s.slave.host_volume()),
        slave_node: s.slave.host.clone(),
        status,
        crawl_status: crawl,
        last_synced: b.stime.map(|s| rfc3339(s.as_timestamp())),
        last_synced_epoch: b.stime.map(Stime::secs),
        stime_ns: b.stime.map(Stime::nanos),
        lag_seconds: b.stime.map(|t| now.seconds_since(t.as_timestamp())),
        last_error: error,
        bytes_sent: b.bytes_sent,
        entries_synced: b.entries,
        data_synced: b.data,
        meta_synced: b.meta,
        failures: b.failures,
        pending_entry: pending.map(|p| p.entry),
        pending_data: pending.map(|p| p.data),
        pending_meta: pending.map(|p| p.meta),
        pending_exact: pending.is_some_and(|p| p.exact),
        checkpoint: checkpoint(s),
        crawl_progress: b.progress.started.and_then(|started| {
            let e = crate::monitor::progress::estimate(&b.progress, now)?;
            Some(Progress {
                started: rfc3339(started),
                started_epoch: started.secs(),
                finished: b.progress.finished.map(rfc3339),
                finished_epoch: b.progress.finished.map(Timestamp::secs),
                running: b.progress.finished.is_none(),
                files_synced: b.progress.files,
                bytes_sent: b.progress.bytes,
                files_per_second: e.files_per_second,
                bytes_per_second: e.bytes_per_second,
                total_files: b.progress.total_files,
                total_bytes: b.progress.total_bytes,
                percent: e.percent,
                eta_seconds: e.eta_seconds,
                summary: crate::monitor::progress::describe(&b.progress, now).unwrap_or_default(),
            })
        }),
        subvolume: b.subvolume.clone(),
        arbiter: b.arbiter,
        last_seen: None,
    }
}

/// This node's rows of session `s` (`pending` counts only if asked: they
/// read the journals).
fn own_rows(
    home: &Home,
    state: &crate::state::State,
    node: &str,
    s: &SessionRecord,
    with_pending: bool,
) -> anyhow::Result<Vec<Row>> {
    let alive = monitor_alive(s.monitor_pid);
    let mut rows = Vec::new();
    for b in state.bricks(s.id)? {
        let pending = with_pending
            .then(|| pending(&journal_dir(&home.session_dir(s.id), b.id), b.stime))
            .flatten();
        rows.push(row(node, s, &b, alive, pending));
    }
    Ok(rows)
}

/// The rows other nodes reported for the session from `vol` to `slave`
/// on the meta-volume: those of a node whose monitor stopped reporting
/// show `Offline`, since when, and never the role it had.
fn peer_rows(meta: &SessionMeta, node: &str) -> anyhow::Result<Vec<Row>> {
    let now = Timestamp::now();
    let mut rows = Vec::new();
    for report in meta.reports(node)? {
        let seen = report.seen();
        let offline = report.offline(now);
        for value in report.rows {
            let Ok(mut r) = serde_json::from_value::<Row>(value) else {
                continue;
            };
            // A report names its own node; only the node may say so.
            r.master_node.clone_from(&report.node);
            r.last_seen = Some(rfc3339(seen));
            if offline {
                r.status = OFFLINE.into();
                r.crawl_status = "N/A".into();
                r.last_error = Some(format!(
                    "node {} has not reported since {}",
                    report.node,
                    local(seen)
                ));
            }
            rows.push(r);
        }
    }
    Ok(rows)
}

/// For `checkpoint wait` on a session whose volume spans nodes: what has
/// not passed `cp` yet, counting every node's rows on the meta-volume. A
/// replica set has passed once any member's row has (only its Active
/// moves the set's stime; a Passive member's row on another node keeps an
/// older one). `None` when no other node reports the session: this node's
/// bricks are then all there is.
pub(super) fn pool_behind(
    home: &Home,
    state: &crate::state::State,
    s: &SessionRecord,
    cp: Stime,
) -> anyhow::Result<Option<Vec<String>>> {
    let Some(meta) = MetaVolume::mounted_at(std::path::Path::new(crate::meta::DEFAULT_MOUNT))
    else {
        return Ok(None);
    };
    let node = node_name();
    let peers = peer_rows(&meta.session(&s.master_vol, &s.slave), &node)?;
    if peers.is_empty() {
        return Ok(None);
    }
    let mut rows = own_rows(home, state, &node, s, false)?;
    rows.extend(peers);
    Ok(Some(behind(&rows, &recorded_sets(home, s)?, cp)))
}

/// Every set the volume had at `create`, even one no node reports.
fn recorded_sets(home: &Home, s: &SessionRecord) -> anyhow::Result<Vec<String>> {
    Ok(crate::volume::Topology::load(&home.session_topology(s.id))?
        .map(|t| {
            t.subvolumes
                .into_iter()
                .filter(|v| !matches!(v.kind, crate::volume::SetKind::Single))
                .map(|v| v.name)
                .collect()
        })
        .unwrap_or_default())
}

/// A node records a checkpoint complete from its own bricks; with other
/// nodes' rows at hand, no row says so while any set or brick of any
/// node is short of it (as `checkpoint wait` decides).
fn checkpoint_of_the_pool(rows: &mut [Row], sets: &[String], cp: Option<Timestamp>) {
    let Some(cp) = cp else { return };
    if behind(rows, sets, cp.as_stime()).is_empty() {
        return;
    }
    for r in rows {
        r.checkpoint.checkpoint_completed = false;
        r.checkpoint.checkpoint_completion_time = None;
        r.checkpoint.checkpoint_completion_epoch = None;
    }
}

/// The sets of `sets` and the rows of no set whose stime is short of `cp`.
fn behind(rows: &[Row], sets: &[String], cp: Stime) -> Vec<String> {
    let synced = |t: Option<i64>| {
        t.map(|t| local(Stime::from_nanos(t).as_timestamp()))
            .unwrap_or_else(|| "never".into())
    };
    let passed = |t: Option<i64>| t.is_some_and(|t| t >= cp.nanos());
    let mut by_set: std::collections::BTreeMap<&str, Option<i64>> =
        sets.iter().map(|s| (s.as_str(), None)).collect();
    let mut out = Vec::new();
    for r in rows {
        match &r.subvolume {
            Some(set) => {
                let best = by_set.entry(set).or_default();
                *best = (*best).max(r.stime_ns);
            }
            None if !passed(r.stime_ns) => out.push(format!(
                "{}:{} {} synced to {}",
                r.master_node,
                r.master_brick,
                r.status,
                synced(r.stime_ns)
            )),
            None => {}
        }
    }
    for (set, stime) in by_set {
        if !passed(stime) {
            out.push(format!("{set} synced to {}", synced(stime)));
        }
    }
    out
}

/// STATUS of a row whose node has stopped reporting.
const OFFLINE: &str = "Offline";

/// This node's name as MASTER NODE shows it.
pub(super) fn node_name() -> String {
    hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// Writes this node's rows of session `id` to the meta-volume (`live`:
/// by a running monitor, which rewrites them every
/// [`crate::meta::PUBLISH_EVERY`]).
pub(super) fn publish(
    home: &Home,
    id: crate::session::SessionId,
    meta: &SessionMeta,
    live: bool,
) -> anyhow::Result<()> {
    let state = home.state()?;
    let s = state.session(id)?;
    let node = node_name();
    let rows = own_rows(home, &state, &node, &s, false)?
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()?;
    meta.publish(&NodeReport {
        node,
        seen: Timestamp::now().nanos(),
        live,
        rows,
    })?;
    Ok(())
}

fn offset_time(t: Timestamp) -> time::OffsetDateTime {
    let utc = time::OffsetDateTime::from_unix_timestamp_nanos(t.nanos() as i128)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    match time::UtcOffset::current_local_offset() {
        Ok(off) => utc.to_offset(off),
        Err(_) => utc,
    }
}

fn rfc3339(t: Timestamp) -> String {
    offset_time(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub(super) fn local(t: Timestamp) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    offset_time(t).format(&fmt).unwrap_or_default()
}

pub fn status(
    home: &Home,
    vol: Option<&VolumeName>,
    slave: Option<&SlaveUrl>,
    detail: bool,
    json: bool,
) -> anyhow::Result<()> {
    let state = home.state()?;
    let node = node_name();
    let sessions: Vec<SessionRecord> = state
        .sessions()?
        .into_iter()
        .filter(|s| vol.is_none_or(|v| &s.master_vol == v))
        .filter(|s| slave.is_none_or(|sl| s.slave.host == sl.host && s.slave.volume == sl.volume))
        .collect();
    if sessions.is_empty() {
        if let (Some(v), Some(s)) = (vol, slave) {
            anyhow::bail!("no session from {v} to {s}");
        }
        if let Some(v) = vol {
            anyhow::bail!("no session for master volume {v}");
        }
    }
    let meta = MetaVolume::mounted_at(std::path::Path::new(crate::meta::DEFAULT_MOUNT));
    let mut rows = Vec::new();
    for s in &sessions {
        // The monitor records completion too; this catches it when the
        // monitor is not running (best effort: status may be read-only).
        let _ = state.note_checkpoint(s.id, Timestamp::now());
        let s = &state.session(s.id)?;
        let mut these = own_rows(home, &state, &node, s, json || detail)?;
        if let Some(m) = &meta {
            match peer_rows(&m.session(&s.master_vol, &s.slave), &node) {
                Ok(peers) if !peers.is_empty() => {
                    these.extend(peers);
                    checkpoint_of_the_pool(&mut these, &recorded_sets(home, s)?, s.checkpoint);
                }
                Ok(_) => {}
                Err(e) => eprintln!("geo-rep: warning: the other nodes' rows: {e}"),
            }
        }
        rows.extend(these);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    // Directories promoted on this host (the DR side of a session).
    let promoted = if vol.is_none() {
        promoted_rows(home)?
    } else {
        Vec::new()
    };
    if !promoted.is_empty() {
        let header = ["DR DIRECTORY", "STATUS", "PROMOTED AT", "JOURNAL"];
        print!("{}", render_table(&header, &promoted));
        if rows.is_empty() {
            return Ok(());
        }
        println!();
    }
    if rows.is_empty() {
        println!("No active geo-replication sessions");
        return Ok(());
    }
    let mut header = vec![
        "MASTER NODE",
        "MASTER VOL",
        "MASTER BRICK",
        "SLAVE USER",
        "SLAVE",
        "SLAVE NODE",
        "STATUS",
        "CRAWL STATUS",
        "LAST_SYNCED",
    ];
    if detail {
        header.extend([
            "ENTRY",
            "DATA",
            "META",
            "FAILURES",
            "CHECKPOINT TIME",
            "CHECKPOINT COMPLETED",
            "CHECKPOINT COMPLETION TIME",
            "SUBVOLUME",
        ]);
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let st = r.stime_ns.map(Stime::from_nanos);
            let cp = r.checkpoint.checkpoint_epoch.map(Timestamp::from_secs);
            let done = r
                .checkpoint
                .checkpoint_completion_epoch
                .map(Timestamp::from_secs);
            let mut c = vec![
                r.master_node.clone(),
                r.master_vol.clone(),
                r.master_brick.clone(),
                r.slave_user.clone(),
                r.slave.clone(),
                r.slave_node.clone(),
                r.status.clone(),
                r.crawl_status.clone(),
                st.map(|s| local(s.as_timestamp()))
                    .unwrap_or_else(|| "N/A".into()),
            ];
            if detail {
                let count = |n: Option<u64>| match n {
                    Some(n) if r.pending_exact => n.to_string(),
                    Some(n) => format!("{n}+"),
                    None => "N/A".into(),
                };
                c.extend([
                    count(r.pending_entry),
                    count(r.pending_data),
                    count(r.pending_meta),
                    r.failures.to_string(),
                ]);
                c.extend([
                    cp.map(local).unwrap_or_else(|| "N/A".into()),
                    match (cp, done) {
                        (None, _) => "N/A".into(),
                        (Some(_), Some(_)) => "Yes".into(),
                        (Some(_), None) => "No".into(),
                    },
                    done.map(local).unwrap_or_else(|| "N/A".into()),
                    match &r.subvolume {
                        Some(s) if r.arbiter => format!("{s} (arbiter)"),
                        Some(s) => s.clone(),
                        None => "N/A".into(),
                    },
                ]);
            }
            c
        })
        .collect();
    print!("{}", render_table(&header, &cells));
    if detail {
        // A Hybrid Crawl in progress (of a running monitor), under the table.
        let crawls: Vec<String> = rows
            .iter()
            .filter(|r| r.crawl_status == CrawlStatus::Hybrid.to_string())
            .filter_map(|r| {
                let p = r.crawl_progress.as_ref().filter(|p| p.running)?;
                Some(format!("Hybrid Crawl {}: {}", r.master_brick, p.summary))
            })
            .collect();
        if !crawls.is_empty() {
            println!();
            for c in crawls {
                println!("{}", crate::terminal::escape_controls(&c));
            }
        }
    }
    Ok(())
}

/// One row per directory `promote` made the primary on this host.
fn promoted_rows(home: &Home) -> anyhow::Result<Vec<Vec<String>>> {
    use crate::dr::promotion::PromotedDir;
    let all = PromotedDir::all(home.root());
    let entries = match std::fs::read_dir(&all) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {}", all.display()))),
    };
    let mut rows = Vec::new();
    for e in entries {
        let place = PromotedDir::at(e?.path());
        let Some(p) = place.load()? else { continue };
        let pid = place.journal_pid_value();
        let journal = if super::promote::journal_alive(pid) {
            format!("running (pid {})", pid.unwrap_or(0))
        } else {
            "stopped: run `geo-rep promote` again".into()
        };
        rows.push(vec![
            crate::terminal::escape_controls(&p.dir.display().to_string()).into_owned(),
            "Promoted".into(),
            local(p.promoted_at()),
            journal,
        ]);
    }
    rows.sort();
    Ok(rows)
}

/// Left-aligned columns separated by four spaces, a dashed rule under the
/// header, as GlusterFS prints it.
pub(super) fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    // Cells name bricks, slave hosts and errors (see `terminal`).
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|c| crate::terminal::escape_controls(c).into_owned())
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}    "));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = String::from("\n");
    out.push_str(&line(header.to_vec()));
    let total = widths.iter().sum::<usize>() + 4 * (widths.len() - 1);
    out.push_str(&"-".repeat(total));
    out.push('\n');
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_aligned_with_glusterfs_header() {
        let t = render_table(
            &["MASTER NODE", "STATUS", "LAST_SYNCED"],
            &[vec!["n1".into(), "Active".into(), "N/A".into()]],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[1], "MASTER NODE    STATUS    LAST_SYNCED");
        assert!(lines[2].chars().all(|c| c == '-'));
        assert_eq!(lines[3], "n1             Active    N/A");
    }

    fn row_of(node: &str, brick: &str, set: Option<&str>, stime: Option<i64>) -> Row {
        serde_json::from_value(serde_json::json!({
            "master_node": node, "master_vol": "gv0", "master_brick": brick,
            "slave_user": "root", "slave": "dr::/srv", "slave_node": "dr",
            "status": "Active", "crawl_status": "Changelog Crawl",
            "last_synced": null, "last_synced_epoch": null, "stime_ns": stime,
            "lag_seconds": null, "last_error": null, "bytes_sent": 0,
            "entries_synced": 0, "data_synced": 0, "meta_synced": 0, "failures": 0,
            "pending_entry": null, "pending_data": null, "pending_meta": null,
            "pending_exact": false, "checkpoint_time": null, "checkpoint_epoch": null,
            "checkpoint_completed": false, "checkpoint_completion_time": null,
            "checkpoint_completion_epoch": null, "crawl_progress": null,
            "subvolume": set, "arbiter": false,
        }))
        .unwrap()
    }

    #[test]
    fn a_set_has_passed_a_checkpoint_once_any_member_on_any_node_has() {
        let sets = ["gv0-replicate-0".to_owned(), "gv0-replicate-1".to_owned()];
        let cp = Stime::from_nanos(100);
        let set0 = Some("gv0-replicate-0");
        let set1 = Some("gv0-replicate-1");
        // set 0 passed on node1 (its Passive row on node2 is older); set 1's
        // Active on node2 has not: not complete, naming set 1 only.
        let rows = [
            row_of("node1", "/b1", set0, Some(150)),
            row_of("node2", "/b2", set0, Some(20)),
            row_of("node1", "/b3", set1, None),
            row_of("node2", "/b4", set1, Some(99)),
        ];
        let left = behind(&rows, &sets, cp);
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(left[0].starts_with("gv0-replicate-1 synced to"), "{left:?}");
        let rows = [
            row_of("node1", "/b1", set0, Some(150)),
            row_of("node2", "/b4", set1, Some(100)),
        ];
        assert!(behind(&rows, &sets, cp).is_empty());
        // A set of the volume no node reports has not passed.
        let left = behind(&rows[..1], &sets, cp);
        assert_eq!(left, ["gv0-replicate-1 synced to never"]);
        // status shows no row complete while set 1 lags.
        let mut shown = [
            row_of("node1", "/b1", set0, Some(150)),
            row_of("node2", "/b4", set1, Some(99)),
        ];
        shown[0].checkpoint.checkpoint_completed = true;
        checkpoint_of_the_pool(&mut shown, &sets, Some(Timestamp::from_nanos(100)));
        assert!(shown.iter().all(|r| !r.checkpoint.checkpoint_completed));
        // A brick of no set counts alone.
        let rows = [row_of("node2", "/plain", None, Some(5))];
        let left = behind(&rows, &[], cp);
        assert_eq!(left.len(), 1);
        assert!(
            left[0].starts_with("node2:/plain Active synced to"),
            "{left:?}"
        );
    }
}
