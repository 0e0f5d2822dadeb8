//! The monitor: one process per running session. It starts, per brick, the
//! journal hook and a worker (crawl + ship), restarts a failing worker with
//! capped exponential back-off, and keeps each brick's status in the state
//! database for `geo-rep status`.

mod worker;

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

use crate::cli::config::SessionConfig;
use crate::session::BrickId;
use crate::state::{CrawlStatus, State, StateError, WorkerStatus};
use crate::transport::ssh::{Auth, SshTarget};

pub use worker::WorkerError;

/// Everything a brick's worker needs, resolved once at start.
#[derive(Debug, Clone)]
pub struct BrickPlan {
    pub brick_id: BrickId,
    pub brick: PathBuf,
    pub journal_dir: PathBuf,
    /// Absolute directories inside the brick that are not replicated (the
    /// georep home, if it lives there).
    pub exclude: Vec<PathBuf>,
}

/// A session as the monitor runs it.
#[derive(Debug, Clone)]
pub struct SessionPlan {
    pub state_home: PathBuf,
    pub target: SshTarget,
    pub host_key: russh::keys::PublicKey,
    pub auth: Auth,
    pub slave_command: String,
    pub config: SessionConfig,
    pub bricks: Vec<BrickPlan>,
}

impl SessionPlan {
    /// Connects to the slave with the session key and the pinned host key,
    /// and greets it.
    pub async fn connect(
        &self,
    ) -> Result<
        (
            crate::transport::ssh::SshConnection,
            crate::transport::SshLink,
        ),
        crate::transport::TransportError,
    > {
        crate::transport::open(
            &self.target,
            crate::transport::ssh::HostKeyPolicy::Pinned(self.host_key.clone()),
            &self.auth,
            &self.slave_command,
            self.config.timeout(),
        )
        .await
    }
}

/// First and longest wait between restarts of a failing worker.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Runs every brick's worker until `shutdown` turns true.
pub async fn run(plan: SessionPlan, shutdown: watch::Receiver<bool>) -> Result<(), StateError> {
    let mut tasks = Vec::new();
    for brick in plan.bricks.clone() {
        let plan = plan.clone();
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            supervise(plan, brick, shutdown).await
        }));
    }
    for t in tasks {
        match t.await {
            Ok(r) => r?,
            Err(e) => tracing::error!("worker task failed: {e}"),
        }
    }
    Ok(())
}

/// Keeps one brick's worker running, backing off while it fails.
async fn supervise(
    plan: SessionPlan,
    brick: BrickPlan,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), StateError> {
    let state = State::open(&plan.state_home)?;
    let mut backoff = BACKOFF_MIN;
    let mut journal = worker::Journal::default();
    let stime = |state: &State| {
        state
            .bricks_by_id(brick.brick_id)
            .ok()
            .flatten()
            .and_then(|b| b.stime)
    };
    loop {
        let before = stime(&state);
        let outcome = worker::run(&plan, &brick, &state, &mut journal, &mut shutdown).await;
        if *shutdown.borrow() {
            break;
        }
        let err = match outcome {
            Ok(()) => break,
            Err(e) => e,
        };
        // A worker that got batches through before failing starts over with
        // short waits; one that keeps failing waits longer and longer.
        if stime(&state) > before {
            backoff = BACKOFF_MIN;
        }
        tracing::error!(brick = %brick.brick.display(), "worker failed: {err}; retrying in {} s", backoff.as_secs());
        // The status is best effort: a busy database must not end supervision.
        let recorded = state
            .set_worker(
                brick.brick_id,
                WorkerStatus::Faulty,
                CrawlStatus::NotApplicable,
            )
            .and_then(|()| state.set_last_error(brick.brick_id, Some(&err.to_string())))
            .and_then(|()| {
                state.add_counters(
                    brick.brick_id,
                    crate::state::Counters {
                        failures: 1,
                        ..Default::default()
                    },
                )
            });
        if let Err(e) = recorded {
            tracing::warn!("cannot record the failure in the state database: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => break,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    journal.stop();
    state.set_worker(
        brick.brick_id,
        WorkerStatus::Stopped,
        CrawlStatus::NotApplicable,
    )?;
    Ok(())
}
