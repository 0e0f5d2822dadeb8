//! A rebalance of the master volume, as the workers must know it.
//!
//! A rebalance (`gluster volume rebalance VOL start`, usually after
//! `add-brick`) moves files between bricks with internal operations that
//! no brick's changelog records. While it runs, a file can be a link file
//! on both its old and its new brick for a moment, so the volume's view
//! may miss a name it holds, and a file a client writes meanwhile can end
//! on its new brick with other times than the slave received. So, from
//! the moment a worker sees a rebalance running until it has re-checked
//! its brick after the rebalance ended:
//!
//! - nothing is removed on the slave (no unlink, rmdir or prune), as with
//!   `ignore-deletes`;
//! - the brick's stime stays where it was (LAST_SYNCED does not move, and
//!   a checkpoint does not complete), while its changelog is still read
//!   and shipped, and the status row says why;
//! - once the rebalance has ended (completed, stopped or failed), the
//!   worker walks its brick: what changed since the hold began is compared
//!   by content, as a delta against the slave's copy (a file written while
//!   it moved can have the size and mtime the slave holds, not its bytes),
//!   and every directory is pruned through the volume's view; then stime
//!   moves on, and the rebalance is recorded
//!   as re-checked for that brick (`<session dir>/rebalance/<brick id>`), so
//!   a restart re-checks only what it had not.
//!
//! The monitor asks `gluster volume rebalance VOL status --xml` every
//! [`POLL`]; see `volume::Rebalance`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::session::BrickId;
use crate::volume::{rebalance_status, Rebalance};

/// How often the monitor asks for the volume's rebalance.
pub const POLL: Duration = Duration::from_secs(1);

/// The volume's latest rebalance as last seen, shared by the workers.
#[derive(Debug, Clone)]
pub struct RebalanceWatch {
    rx: watch::Receiver<Arc<Option<Rebalance>>>,
}

impl Default for RebalanceWatch {
    /// A volume that is never rebalanced (no GlusterFS volume).
    fn default() -> Self {
        RebalanceWatch {
            rx: watch::channel(Arc::new(None)).1,
        }
    }
}

impl RebalanceWatch {
    /// Asks for `vol`'s rebalance now and then every [`POLL`] until
    /// `shutdown`. While the CLI cannot answer, the last answer stands.
    pub fn spawn(vol: String, mut shutdown: watch::Receiver<bool>) -> RebalanceWatch {
        let first = tokio::task::block_in_place(|| ask(&vol)).unwrap_or_default();
        let (tx, rx) = watch::channel(Arc::new(first));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = shutdown.changed() => break,
                }
                let vol = vol.clone();
                let Ok(answer) = tokio::task::spawn_blocking(move || ask(&vol)).await else {
                    break;
                };
                let Some(now) = answer else { continue };
                tx.send_if_modified(|old| {
                    let changed = **old != now;
                    if changed {
                        *old = Arc::new(now);
                    }
                    changed
                });
            }
        });
        RebalanceWatch { rx }
    }

    /// The latest rebalance, if one was ever started.
    pub fn latest(&self) -> Option<Rebalance> {
        (**self.rx.borrow()).clone()
    }
}

/// `None` when the CLI did not answer (logged).
fn ask(vol: &str) -> Option<Option<Rebalance>> {
    match rebalance_status(vol) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::debug!("cannot tell whether {vol} is being rebalanced: {e}");
            None
        }
    }
}

/// Where it is known which rebalance each brick's worker re-checked.
#[derive(Debug, Clone)]
pub struct Rechecked {
    dir: PathBuf,
}

impl Rechecked {
    pub fn new(session_dir: &Path) -> Rechecked {
        Rechecked {
            dir: session_dir.join("rebalance"),
        }
    }

    /// The task id of the rebalance `brick` was last re-checked after.
    pub fn get(&self, brick: BrickId) -> Option<String> {
        let text = std::fs::read_to_string(self.dir.join(brick.to_string())).ok()?;
        Some(text.trim().to_owned())
    }

    /// Records that `brick` was re-checked after rebalance `task`.
    pub fn set(&self, brick: BrickId, task: &str) -> std::io::Result<()> {
        crate::fsutil::create_private_dir(&self.dir)?;
        std::fs::write(self.dir.join(brick.to_string()), task)
    }
}

/// What a brick's worker must do about the volume's rebalance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// None since this brick was last re-checked.
    Quiet,
    /// One runs: hold removals and stime.
    Running(Rebalance),
    /// One ended that this brick has not been re-checked after.
    Ended(Rebalance),
}

/// The phase of `brick` given the volume's `latest` rebalance.
pub fn phase(latest: Option<Rebalance>, rechecked: Option<&str>) -> Phase {
    match latest {
        None => Phase::Quiet,
        Some(r) if r.running => Phase::Running(r),
        Some(r) if rechecked == Some(r.task.as_str()) => Phase::Quiet,
        Some(r) => Phase::Ended(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rebalance(task: &str, running: bool) -> Rebalance {
        Rebalance {
            task: task.into(),
            running,
            status: if running { "in progress" } else { "completed" }.into(),
        }
    }

    #[test]
    fn a_brick_is_rechecked_once_after_each_rebalance() {
        assert_eq!(phase(None, None), Phase::Quiet);
        let r = rebalance("t1", true);
        assert_eq!(phase(Some(r.clone()), Some("t0")), Phase::Running(r));
        let done = rebalance("t1", false);
        assert_eq!(
            phase(Some(done.clone()), Some("t0")),
            Phase::Ended(done.clone())
        );
        assert_eq!(phase(Some(done.clone()), None), Phase::Ended(done.clone()));
        assert_eq!(phase(Some(done), Some("t1")), Phase::Quiet);

        let dir = tempfile::tempdir().unwrap();
        let marks = Rechecked::new(dir.path());
        let id = BrickId::new(3);
        assert_eq!(marks.get(id), None);
        marks.set(id, "t1").unwrap();
        assert_eq!(marks.get(id).as_deref(), Some("t1"));
    }
}
