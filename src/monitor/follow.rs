//! Following the master volume while a session runs: its topology is
//! compared with the one recorded at `create` every
//! `volume-check-interval` seconds. Bricks added to a plain distribute
//! volume on this node join the session (a worker each, and every
//! worker's view of the volume takes them in), since DHT only spreads the
//! same namespace over more bricks and a rebalance moves files onto them;
//! any other change stops every worker (Faulty, naming it) rather than
//! copy a volume the session was not planned for.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

use super::{plan::brick_plan, spawn_worker, SessionPlan};
use crate::session::{Brick, BrickId, Home, SessionId};
use crate::state::StateError;
use crate::volume::{is_local, volume_info, Topology};

/// Makes the session follow `now`, the volume as it is, if it only grew
/// by bricks on this node: they are added to the session (the state
/// database and the recorded topology) and returned with their ids. Any
/// other change is refused with words naming it.
pub fn follow_volume(
    home: &Home,
    session: SessionId,
    recorded: &Topology,
    now: &Topology,
) -> Result<Vec<(BrickId, PathBuf)>, String> {
    let Some(why) = now.changes_since(recorded) else {
        return Ok(Vec::new());
    };
    let added = now
        .added_bricks(recorded)
        .filter(|added| added.iter().all(|b| is_local(&b.host)))
        .ok_or_else(|| format!("{why}; georep does not follow such a change yet: stop, delete and create the session again"))?;
    let failed = |e: &dyn std::fmt::Display| format!("{why}; following it failed: {e}");
    let state = home.state().map_err(|e| failed(&e))?;
    let mut out = Vec::new();
    for b in added {
        let brick = Brick::new(b.path.clone()).map_err(|e| failed(&e))?;
        let id = state.add_brick(session, &brick).map_err(|e| failed(&e))?;
        tracing::info!("brick {b} was added to the volume: it joins the session");
        out.push((id, b.path));
    }
    now.save(&home.session_topology(session))
        .map_err(|e| failed(&e))?;
    Ok(out)
}

/// Watches the volume until shutdown (see the module docs); returns the
/// supervised workers of the bricks it added, for the monitor to await.
pub async fn watch_volume(
    plan: SessionPlan,
    mut recorded: Topology,
    mut shutdown: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<Result<(), StateError>>> {
    let interval = Duration::from_secs(plan.config.volume_check_interval.max(1));
    let home = Home::new(plan.state_home.clone());
    let mut workers = Vec::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return workers,
        }
        if plan.volume_changed.get().is_some() {
            continue;
        }
        let name = recorded.name.clone();
        let now = match tokio::task::spawn_blocking(move || volume_info(&name)).await {
            Ok(Ok(now)) => now,
            Ok(Err(e)) => {
                tracing::warn!("checking the master volume's topology: {e}");
                continue;
            }
            Err(e) => {
                tracing::warn!("checking the master volume's topology: {e}");
                continue;
            }
        };
        match follow_volume(&home, plan.session_id, &recorded, &now) {
            Ok(added) => {
                for (id, path) in added {
                    plan.volume_bricks.add(path.clone());
                    let brick = brick_plan(&home, plan.session_id, &plan.config, id, &path, true);
                    workers.push(spawn_worker(&plan, brick, &shutdown));
                }
                recorded = now;
            }
            Err(why) => {
                tracing::error!("{why}: stopping the workers");
                plan.volume_changed.set(why);
            }
        }
    }
}
