//! `geo-rep failback MASTERVOL SLAVE` on the repaired master, after the DR
//! directory was promoted (`geo-rep promote`).
//!
//! Step 1, the loss window: each brick's entries changed after its last
//! committed stime never reached DR, and leveling the master with DR would
//! overwrite or remove them. They are moved aside first, with their paths,
//! into `georep-conflicts/<time>/<brick name>/` beside the brick (see
//! `dr::conflicts`), and listed. The `<time>` is chosen by the first run
//! and kept in the session's directory (`failback.json`), so a run killed
//! at any point and started again moves the rest into the same place and
//! lists everything moved so far.

use std::path::PathBuf;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::lifecycle::monitor_alive;
use super::{find_session, Home, UsageError};
use crate::dr::conflicts;
use crate::session::{SlaveUrl, Timestamp, VolumeName};

/// What a failback run keeps between runs, in the session's directory.
#[derive(Debug, Serialize, Deserialize)]
struct FailbackState {
    /// The `<time>` of the conflicts directories, chosen once.
    stamp: String,
}

pub fn failback(home: &Home, vol: &VolumeName, slave: &SlaveUrl) -> anyhow::Result<()> {
    let state = home.state()?;
    let session = find_session(&state, vol, slave)?;
    if monitor_alive(session.monitor_pid) {
        bail!(
            "session {vol} -> {slave} is running; stop it first with `geo-rep stop {vol} {slave}` (the old master must not ship over the promoted copy)"
        );
    }
    if home.session_topology(session.id).exists() {
        return Err(UsageError(format!(
            "failback does not handle GlusterFS master volumes yet ({vol}); only bricks that are plain directories"
        ))
        .into());
    }
    let bricks = state.bricks(session.id)?;
    if let Some(b) = bricks.iter().find(|b| b.stime.is_none()) {
        bail!(
            "brick {} of {vol} never committed a batch to {slave}: all of it is in the loss window, and failback cannot tell what DR has; copy it aside and sync it from DR in full",
            b.brick.path().display()
        );
    }
    let stamp = failback_stamp(home, session.id)?;
    let mut total = 0;
    for b in &bricks {
        let Some(stime) = b.stime else { continue };
        let brick = b.brick.path();
        let into = conflicts::conflicts_dir(brick, &stamp);
        let moved = conflicts::set_aside(brick, stime, &into, &[home.root().to_owned()])
            .with_context(|| format!("moving the loss window of {} aside", brick.display()))?;
        let kept =
            conflicts::listed(&into).with_context(|| format!("listing {}", into.display()))?;
        println!(
            "loss window of {} (changed after its last committed stime, {}): {} entr{} in {} ({} moved by this run)",
            brick.display(),
            super::status::local(stime.as_timestamp()),
            kept.len(),
            if kept.len() == 1 { "y" } else { "ies" },
            into.display(),
            moved.len()
        );
        for p in &kept {
            println!(
                "  {}",
                crate::terminal::escape_controls(&p.display().to_string())
            );
        }
        total += kept.len();
    }
    if total == 0 {
        println!(
            "loss window: empty (nothing changed on the master after its last committed stime)"
        );
    }
    Ok(())
}

/// The conflicts directories' `<time>`: the one the first run chose.
fn failback_stamp(home: &Home, id: crate::session::SessionId) -> anyhow::Result<String> {
    let path: PathBuf = home.session_dir(id).join("failback.json");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let s: FailbackState = serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", path.display()))?;
            return Ok(s.stamp);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let fmt = time::macros::format_description!("[year][month][day]-[hour][minute][second]");
    let now = time::OffsetDateTime::from_unix_timestamp_nanos(Timestamp::now().nanos().into())
        .context("the clock")?;
    let stamp = now.format(&fmt).context("formatting the time")?;
    let state = FailbackState { stamp };
    crate::fsutil::write_private_file(&path, &serde_json::to_vec(&state)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(state.stamp)
}
