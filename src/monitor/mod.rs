//! The monitor: one process per running session. It starts, per brick, the
//! journal hook and a worker (crawl + ship), restarts a failing worker with
//! capped exponential back-off, and keeps each brick's status in the state
//! database for `geo-rep status`.
//!
//! Each worker runs inside a `worker` span with the `brick` and `slave`
//! fields, so every line it logs names both (see `cli::logging`).
//!
//! May import: `brick` (the view of a distributed volume), `changelog`,
//! `crawl`, `ship`, `transport`, `proto`, `session`, `state`, `volume`
//! (the master volume's topology, compared while it runs); never `cli`.

mod follow;
pub mod metrics;
mod plan;
pub mod progress;
mod worker;

use std::time::Duration;

use tokio::sync::watch;
use tracing::Instrument;

use crate::session::Stime;
use crate::state::{CrawlStatus, State, StateError, WorkerStatus};

pub use follow::follow_volume;
pub use plan::{plan, BrickPlan, Live, PlanError, SessionPlan, VolumeBricks, VolumeChanged};
pub use worker::WorkerError;

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
    if let Some(addr) = plan.config.metrics_addr {
        let src = metrics::Source {
            state_home: plan.state_home.clone(),
            session_id: plan.session_id,
            session_dir: crate::session::Home::new(plan.state_home.clone())
                .session_dir(plan.session_id),
        };
        tokio::spawn(metrics::serve(addr, src, shutdown.clone()));
    }
    let watcher = plan.topology.clone().map(|recorded| {
        tokio::spawn(follow::watch_volume(
            plan.clone(),
            recorded,
            shutdown.clone(),
        ))
    });
    for brick in plan.bricks.clone() {
        tasks.push(spawn_worker(&plan, brick, &shutdown));
    }
    if let Some(w) = watcher {
        // Returns at shutdown, with the workers of the bricks it added.
        match w.await {
            Ok(added) => tasks.extend(added),
            Err(e) => tracing::error!("volume watch failed: {e}"),
        }
    }
    for t in tasks {
        match t.await {
            Ok(r) => r?,
            Err(e) => tracing::error!("worker task failed: {e}"),
        }
    }
    Ok(())
}

/// Starts the supervised worker of `brick`, in a span naming it.
fn spawn_worker(
    plan: &SessionPlan,
    brick: BrickPlan,
    shutdown: &watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Result<(), StateError>> {
    let span = tracing::info_span!(
        "worker",
        brick = %brick.brick.display(),
        slave = %plan.slave,
    );
    let plan = plan.clone();
    let shutdown = shutdown.clone();
    tokio::spawn(async move { supervise(plan, brick, shutdown).await }.instrument(span))
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
    let mut journal = worker::BrickJournal::default();
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
