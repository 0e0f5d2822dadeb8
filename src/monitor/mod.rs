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
//! (the master volume's topology, compared while it runs), `meta` (the
//! meta-volume every node of a cluster mounts); never `cli`.

mod fence;
mod follow;
pub mod heal;
pub mod metrics;
mod plan;
pub mod progress;
pub mod rebalance;
pub mod sets;
mod worker;

use std::time::Duration;

use tokio::sync::watch;
use tracing::Instrument;

use crate::session::Timestamp;
use crate::state::{CrawlStatus, State, StateError, WorkerStatus};

pub use follow::follow_volume;
pub use plan::{plan, BrickPlan, Live, PlanError, SessionPlan, VolumeBricks, VolumeChanged};
pub use worker::WorkerError;

use sets::{BrickHealth, Election, LocalElection, LocalStime, SetStime, SharedStime};

/// First wait between restarts of a failing worker; the longest is the
/// `retry-max-interval` option.
const BACKOFF_MIN: Duration = Duration::from_secs(1);

/// Least time a member of a set spread over nodes stays out of the
/// election after it started, its brick came back or it was deposed (see
/// `member`); GlusterFS's clients retry a lost brick every 3 s.
const REJOIN_MIN: Duration = Duration::from_secs(6);

/// How often the monitor looks whether the checkpoint has completed.
const CHECKPOINT_POLL: Duration = Duration::from_millis(500);

/// Runs every brick's worker until `shutdown` turns true.
pub async fn run(mut plan: SessionPlan, shutdown: watch::Receiver<bool>) -> Result<(), StateError> {
    if let Some(t) = &plan.topology {
        plan.rebalance = rebalance::RebalanceWatch::spawn(t.name.clone(), shutdown.clone());
        plan.heals = heal::HealWatch::spawn(t, shutdown.clone());
    }
    let mut tasks = Vec::new();
    {
        let state = State::open(&plan.state_home)?;
        let id = plan.session_id;
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                match state.note_checkpoint(id, Timestamp::now()) {
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
    let members: Vec<_> = plan
        .bricks
        .iter()
        .filter(|b| b.set.is_some())
        .map(|b| b.brick.clone())
        .collect();
    let failover = Duration::from_secs(plan.config.replica_failover_interval.max(1));
    let sets = (!members.is_empty()).then(|| {
        let health = BrickHealth::spawn(
            plan.master_vol.clone(),
            members,
            failover / 4,
            shutdown.clone(),
        );
        let election: std::sync::Arc<dyn Election> =
            std::sync::Arc::new(LocalElection::new(sets_dir(&plan)));
        (health, election)
    });
    for brick in plan.bricks.clone() {
        // `sets` is there whenever a brick has a set.
        let Some((health, election)) = sets.clone().filter(|_| brick.set.is_some()) else {
            tasks.push(spawn_worker(&plan, brick, &shutdown));
            continue;
        };
        let span = worker_span(&plan, &brick);
        let plan = plan.clone();
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(
            async move { member(plan, brick, health, election, failover, shutdown).await }
                .instrument(span),
        ));
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

/// Where the sets' locks and epochs are: across nodes on the meta-volume;
/// this node's alone without one (a set with members elsewhere is then
/// refused by `plan`).
fn sets_dir(plan: &SessionPlan) -> std::path::PathBuf {
    match &plan.meta {
        Some(meta) => meta.sets_dir(),
        None => crate::session::Home::new(plan.state_home.clone())
            .session_dir(plan.session_id)
            .join("sets"),
    }
}

/// Starts the supervised worker of `brick`, in a span naming it.
fn spawn_worker(
    plan: &SessionPlan,
    brick: BrickPlan,
    shutdown: &watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Result<(), StateError>> {
    let span = worker_span(plan, &brick);
    let plan = plan.clone();
    let shutdown = shutdown.clone();
    tokio::spawn(async move { supervise(plan, brick, shutdown).await }.instrument(span))
}

/// The span every line of a brick's worker is logged in.
fn worker_span(plan: &SessionPlan, brick: &BrickPlan) -> tracing::Span {
    tracing::info_span!(
        "worker",
        brick = %brick.brick.display(),
        slave = %plan.slave,
    )
}

/// Keeps one brick's worker running, backing off while it fails.
async fn supervise(
    plan: SessionPlan,
    brick: BrickPlan,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), StateError> {
    let state = State::open(&plan.state_home)?;
    let stime = LocalStime::open(&plan.state_home, brick.brick_id, None)?;
    let mut journal = worker::BrickJournal::default();
    keep_running(
        &plan,
        &brick,
        &state,
        &stime,
        &mut journal,
        &mut shutdown,
        None,
    )
    .await;
    stopped(&state, &brick, &mut journal)
}

/// A member of a replica set: Passive while another member is Active, its
/// brick is down, or it is the arbiter; Active (a worker kept running as
/// [`supervise`] does) while it holds the set's election, until its brick
/// goes down.
async fn member(
    plan: SessionPlan,
    brick: BrickPlan,
    mut health: BrickHealth,
    election: std::sync::Arc<dyn Election>,
    failover: Duration,
    shutdown: watch::Receiver<bool>,
) -> Result<(), StateError> {
    let state = State::open(&plan.state_home)?;
    let set = brick.set.clone();
    let local = LocalStime::open(&plan.state_home, brick.brick_id, set.as_ref())?;
    let Some(set) = set else {
        return Ok(());
    };
    // Across nodes, the set's stime is also on the meta-volume, so a
    // member that takes over on another node continues from it.
    let stime: Box<dyn SetStime> = match &plan.meta {
        Some(meta) => Box::new(SharedStime::new(
            local,
            &meta.sets_dir(),
            &set.name,
            &fence::node_name(),
        )),
        None => Box::new(local),
    };
    // Polled this often for the lock, so that a Passive worker takes over
    // within `replica-failover-interval` of the Active brick going down.
    let poll = (failover / 4).max(Duration::from_millis(250));
    let mut journal = worker::BrickJournal::default();
    let mut probe = SlaveProbe::default();
    let epochs = crate::meta::epoch::EpochFile::new(&sets_dir(&plan), &set.name);
    // This member's last grant, and the one that deposed it, if the slave
    // said so and the meta-volume does not show it yet.
    let mut last_epoch = 0;
    let mut deposed: Option<fence::Deposed> = None;
    // STATUS and last error as last recorded, so polling rewrites nothing.
    let mut shown: Option<(WorkerStatus, Option<String>)> = None;
    // Across nodes, a member that has just started, seen its brick come
    // back or seen the epoch that deposed it stays out of the election for
    // a while: its node's client of the meta-volume may not reach every
    // brick yet, and a lock taken through part of a replica misses the
    // holder's lock on the rest (the set would have two Active members
    // until the slave's fence deposes one).
    let rejoin = plan.meta.as_ref().map(|_| failover.max(REJOIN_MIN));
    let mut out_until = rejoin.map(|d| std::time::Instant::now() + d);
    let mut was_down = false;
    let show = |shown: &mut Option<_>, status: WorkerStatus, why: Option<String>| {
        if shown.as_ref() == Some(&(status, why.clone())) {
            return;
        }
        let said = why.as_deref().map(|w| format!(": {w}")).unwrap_or_default();
        tracing::info!("worker {status}{said}");
        let r = state.set_worker_because(
            brick.brick_id,
            status,
            CrawlStatus::NotApplicable,
            why.as_deref(),
        );
        if let Err(e) = r {
            tracing::warn!("cannot record the worker status: {e}");
        }
        *shown = Some((status, why));
    };
    while !*shutdown.borrow() {
        if deposed.as_ref().is_some_and(|d| d.seen_in(&epochs)) {
            deposed = None;
            out_until = rejoin.map(|d| std::time::Instant::now() + d);
        }
        let down = health.down(&brick.brick);
        if std::mem::replace(&mut was_down, down.is_some()) && down.is_none() {
            out_until = rejoin.map(|d| std::time::Instant::now() + d);
        }
        let rejoining = out_until.is_some_and(|t| std::time::Instant::now() < t);
        let unreachable = match (&down, set.arbiter) {
            (None, false) => probe.unreachable(&plan.target, failover).await,
            _ => None,
        };
        let lease = match (&down, set.arbiter) {
            (Some(why), _) => {
                show(&mut shown, WorkerStatus::Faulty, Some(why.clone()));
                None
            }
            (None, true) => {
                show(&mut shown, WorkerStatus::Passive, None);
                None
            }
            (None, false) if unreachable.is_some() => {
                show(&mut shown, WorkerStatus::Faulty, unreachable);
                None
            }
            (None, false) if deposed.is_some() => {
                let why = deposed.as_ref().map(|d| d.describe(&set.name));
                show(&mut shown, WorkerStatus::Faulty, why);
                None
            }
            (None, false) if rejoining => {
                show(&mut shown, WorkerStatus::Passive, None);
                None
            }
            (None, false) => match election.try_lead(&set.name) {
                Ok(lease) => {
                    if lease.is_none() {
                        show(&mut shown, WorkerStatus::Passive, None);
                    }
                    lease
                }
                Err(e) => {
                    show(&mut shown, WorkerStatus::Faulty, Some(e.to_string()));
                    None
                }
            },
        };
        let Some(lease) = lease else {
            let mut shutdown = shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = health.changed() => {}
                _ = shutdown.changed() => {}
            }
            continue;
        };
        // The epoch this grant ships under, durable before anything is
        // shipped (see `fence`).
        let raised = fence::raise(&sets_dir(&plan), &set.name, &brick.brick, last_epoch);
        let fence = match raised {
            Ok(f) => f,
            Err(e) => {
                show(&mut shown, WorkerStatus::Faulty, Some(e.to_string()));
                drop(lease);
                let mut shutdown = shutdown.clone();
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
        };
        last_epoch = fence.epoch;
        tracing::info!(set = %set.name, epoch = fence.epoch, "elected Active of the replica set");
        let fenced = SessionPlan {
            fence: Some(fence),
            ..plan.clone()
        };
        // The other legs' workers read this set through its Active brick.
        plan.volume_bricks.set_active(&set.name, Some(&brick.brick));
        // Read this brick's changelog afresh from the set's stime: what
        // this worker read while it was last Active is behind.
        let mut active = brick.clone();
        if let crate::crawl::journal::ChangeSource::Glusterfs(_) = active.source {
            active.source = crate::crawl::journal::ChangeSource::Glusterfs(
                crate::changelog::glusterfs::GlusterBrick::new(&active.brick),
            );
        }
        // The worker stops as for a shutdown when the brick goes down.
        let (stop_tx, mut stop) = watch::channel(false);
        let watcher = {
            let (mut health, mut shutdown, path) =
                (health.clone(), shutdown.clone(), brick.brick.clone());
            tokio::spawn(async move {
                while !*shutdown.borrow() && health.down(&path).is_none() {
                    tokio::select! {
                        _ = health.changed() => {}
                        _ = shutdown.changed() => {}
                    }
                }
                let _ = stop_tx.send(true);
            })
        };
        let gave_up = keep_running(
            &fenced,
            &active,
            &state,
            &*stime,
            &mut journal,
            &mut stop,
            Some(failover),
        )
        .await;
        watcher.abort();
        // Shown before the lock goes, so no status ever has two Active.
        shown = None;
        match (health.down(&brick.brick), &gave_up) {
            (_, Some(fence::GaveUp::Deposed(d))) => {
                show(
                    &mut shown,
                    WorkerStatus::Faulty,
                    Some(d.describe(&set.name)),
                );
                deposed = Some(d.clone());
            }
            (Some(why), _) => show(&mut shown, WorkerStatus::Faulty, Some(why)),
            (None, Some(fence::GaveUp::Failing(err))) => show(
                &mut shown,
                WorkerStatus::Faulty,
                Some(format!("stepped down as Active of {}: {err}", set.name)),
            ),
            (None, None) => show(&mut shown, WorkerStatus::Passive, None),
        }
        plan.volume_bricks.set_active(&set.name, None);
        drop(lease);
        tracing::info!(set = %set.name, "stepped down as Active of the replica set");
        if matches!(gave_up, Some(fence::GaveUp::Failing(_))) {
            // Out of the election for a while: another member that can
            // ship takes the lock meanwhile.
            let mut shutdown = shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(failover * 2) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
    stopped(&state, &brick, &mut journal)
}

/// Whether this node reaches the slave's SSH port, asked at most once per
/// period: a member that cannot does not run for Active (its row shows
/// `Faulty`, naming the host), so the set goes to one that can ship.
#[derive(Default)]
struct SlaveProbe {
    last: Option<(std::time::Instant, Option<String>)>,
}

impl SlaveProbe {
    /// Why the slave cannot be reached, or `None`.
    async fn unreachable(
        &mut self,
        target: &crate::transport::ssh::SshTarget,
        every: Duration,
    ) -> Option<String> {
        if let Some((at, why)) = &self.last {
            if at.elapsed() < every {
                return why.clone();
            }
        }
        let addr = (target.host.as_str(), target.port);
        let why = match tokio::time::timeout(every, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(format!(
                "slave {}:{} is unreachable from this node: {e}",
                target.host, target.port
            )),
            Err(_) => Some(format!(
                "slave {}:{} is unreachable from this node: no answer in {} s",
                target.host,
                target.port,
                every.as_secs()
            )),
        };
        self.last = Some((std::time::Instant::now(), why.clone()));
        why
    }
}

/// The end of a brick's supervision: its hook stopped, its row Stopped.
fn stopped(
    state: &State,
    brick: &BrickPlan,
    journal: &mut worker::BrickJournal,
) -> Result<(), StateError> {
    journal.stop();
    state.set_worker(
        brick.brick_id,
        WorkerStatus::Stopped,
        CrawlStatus::NotApplicable,
    )
}

/// Runs a brick's worker until `shutdown` turns true, restarting it with
/// back-off while it fails. With `give_up_after`, returns the last error
/// once the worker has failed that long without shipping a batch (an
/// Active member then steps down, so a member that can ship takes over),
/// and at once when the slave says its epoch is deposed.
async fn keep_running(
    plan: &SessionPlan,
    brick: &BrickPlan,
    state: &State,
    stimes: &dyn SetStime,
    journal: &mut worker::BrickJournal,
    shutdown: &mut watch::Receiver<bool>,
    give_up_after: Option<Duration>,
) -> Option<fence::GaveUp> {
    let mut backoff = BACKOFF_MIN;
    let backoff_max = Duration::from_secs(plan.config.retry_max_interval).max(BACKOFF_MIN);
    let stime = |_: &State| stimes.stime().ok().flatten();
    let mut failing_since: Option<std::time::Instant> = None;
    loop {
        let before = stime(state);
        let outcome = worker::run(plan, brick, state, stimes, journal, shutdown).await;
        if *shutdown.borrow() {
            break;
        }
        let err = match outcome {
            Ok(()) => break,
            Err(e) => e,
        };
        if let Some(d) = fence::Deposed::of(&err) {
            tracing::warn!("worker stopped: {err}");
            return Some(fence::GaveUp::Deposed(d));
        }
        // A worker that got batches through before failing starts over with
        // short waits; one that keeps failing waits longer and longer.
        if stime(state) > before {
            backoff = BACKOFF_MIN;
            failing_since = None;
        }
        let since = *failing_since.get_or_insert_with(std::time::Instant::now);
        if give_up_after.is_some_and(|d| since.elapsed() >= d) {
            return Some(fence::GaveUp::Failing(err.to_string()));
        }
        tracing::error!("worker failed: {err}; retrying in {} s", backoff.as_secs());
        // The status is best effort: a busy database must not end supervision.
        let recorded = state
            .set_worker_because(
                brick.brick_id,
                WorkerStatus::Faulty,
                CrawlStatus::NotApplicable,
                Some(&err.to_string()),
            )
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
    None
}
