//! The monitor: one process per running session. It starts, per brick, the
//! journal hook and a worker (crawl + ship), restarts a failing worker with
//! capped exponential back-off, and keeps each brick's status in the state
//! database for `geo-rep status`.
//!
//! Each worker runs inside a `worker` span with the `brick` and `slave`
//! fields, so every line it logs names both (see `cli::logging`).

pub mod metrics;
pub mod progress;
mod worker;

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use tracing::Instrument;

use crate::crawl::filter::SyncFilter;
use crate::session::config::SessionConfig;
use crate::session::{BrickId, Stime};
use crate::state::{CrawlStatus, SessionState, State, StateError, WorkerStatus};
use crate::transport::ssh::{Auth, SshTarget};

pub use worker::WorkerError;

/// Everything a brick's worker needs, resolved once at start.
#[derive(Debug, Clone)]
pub struct BrickPlan {
    pub brick_id: BrickId,
    pub brick: PathBuf,
    pub journal_dir: PathBuf,
    /// Where the worker reads the brick's changes: the journal the hook
    /// writes in `journal_dir`, or the brick's GlusterFS changelogs.
    pub source: crate::crawl::journal::ChangeSource,
    /// Absolute directories inside the brick that are not replicated (the
    /// georep home, if it lives there).
    pub exclude: Vec<PathBuf>,
}

/// A session as the monitor runs it.
#[derive(Debug, Clone)]
pub struct SessionPlan {
    /// Row id of the session in the state database.
    pub session_id: i64,
    /// `MASTERVOL` and `[user@]host::dir`, as the operator names them.
    pub master_vol: String,
    pub slave: String,
    pub state_home: PathBuf,
    pub target: SshTarget,
    pub host_key: russh::keys::PublicKey,
    pub auth: Auth,
    pub slave_command: String,
    /// `bandwidth-limit`, shared by every worker of the session.
    pub throttle: Option<std::sync::Arc<crate::transport::throttle::Throttle>>,
    pub config: SessionConfig,
    pub bricks: Vec<BrickPlan>,
}

/// What can change while a session runs: re-read by each worker between
/// batches (see [`SessionPlan::live`]).
#[derive(Debug, Clone)]
pub struct Live {
    /// The settings as stored now; options marked `live` in
    /// `session::config::OPTIONS` are taken from here.
    pub config: SessionConfig,
    /// `geo-rep pause`: the journal keeps recording, nothing is shipped.
    pub paused: bool,
    pub filter: SyncFilter,
}

impl SessionPlan {
    /// The session's settings and pause flag as stored now. If they cannot
    /// be read, the worker goes on with what it has (and says so).
    pub fn live(&self, state: &State) -> Live {
        let stored = state
            .session(self.session_id)
            .map_err(|e| e.to_string())
            .and_then(|s| {
                let config = SessionConfig::from_json(&s.config).map_err(|e| e.to_string())?;
                Ok((config, s.state == SessionState::Paused))
            });
        let (config, paused) = match stored {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(
                    "reading the live session settings: {e}; keeping the settings of the start"
                );
                (self.config.clone(), false)
            }
        };
        Live {
            filter: config.filter(),
            config,
            paused,
        }
    }

    /// Connects to the slave with the session key and the pinned host key,
    /// and greets it over `sync-jobs` streams.
    pub async fn connect(
        &self,
    ) -> Result<
        (
            crate::transport::ssh::SshConnection,
            crate::transport::SshLink,
        ),
        crate::transport::TransportError,
    > {
        self.connect_streams(self.config.sync_jobs as usize).await
    }

    /// [`SessionPlan::connect`] with `streams` streams (a check needs one).
    pub async fn connect_streams(
        &self,
        streams: usize,
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
            streams,
        )
        .await
        .map(|(conn, mut link)| {
            link.set_throttle(self.throttle.clone());
            (conn, link)
        })
    }
}

/// First wait between restarts of a failing worker; the longest is the
/// `retry-max-interval` option.
const BACKOFF_MIN: Duration = Duration::from_secs(1);

/// How often the monitor looks whether the checkpoint has completed.
const CHECKPOINT_POLL: Duration = Duration::from_millis(500);

/// Runs every brick's worker until `shutdown` turns true.
pub async fn run(plan: SessionPlan, shutdown: watch::Receiver<bool>) -> Result<(), StateError> {
    let mut tasks = Vec::new();
    {
        let state = State::open(&plan.state_home)?;
        let id = plan.session_id;
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                match state.note_checkpoint(id, Stime::now()) {
                    Ok(true) => tracing::info!("checkpoint completed"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!("recording checkpoint completion: {e}"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(CHECKPOINT_POLL) => {}
                    _ = shutdown.changed() => break,
                }
            }
        });
    }
    if let Ok(addr) = plan.config.metrics_addr.parse() {
        let src = metrics::Source {
            state_home: plan.state_home.clone(),
            session_id: plan.session_id,
            session_dir: crate::session::Home::new(plan.state_home.clone())
                .session_dir(plan.session_id),
        };
        tokio::spawn(metrics::serve(addr, src, shutdown.clone()));
    }
    for brick in plan.bricks.clone() {
        let span = tracing::info_span!(
            "worker",
            brick = %brick.brick.display(),
            slave = %plan.slave,
        );
        let plan = plan.clone();
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(
            async move { supervise(plan, brick, shutdown).await }.instrument(span),
        ));
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
    let backoff_max = Duration::from_secs(plan.config.retry_max_interval).max(BACKOFF_MIN);
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
        tracing::error!("worker failed: {err}; retrying in {} s", backoff.as_secs());
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
        backoff = (backoff * 2).min(backoff_max);
    }
    journal.stop();
    state.set_worker(
        brick.brick_id,
        WorkerStatus::Stopped,
        CrawlStatus::NotApplicable,
    )?;
    Ok(())
}
