//! A stored session resolved into what the monitor runs: its target, keys,
//! settings and, per brick, the change source and what is left out.

use std::path::{Path, PathBuf};

use super::sets::SetPlan;
use crate::changelog::glusterfs::{internal_names, GlusterBrick};
use crate::crawl::filter::SyncFilter;
use crate::crawl::journal::{journal_dir, ChangeSource};
use crate::relpath::RelPath;
use crate::session::config::{ChangeDetector, SessionConfig};
use crate::session::{BrickId, Home, SessionId};
use crate::state::{SessionRecord, SessionState, State, StateError};
use crate::transport::ssh::{self, Auth, SshTarget};
use crate::volume::Topology;

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
    /// The replica set the brick belongs to, if any: one worker of it is
    /// Active at a time.
    pub set: Option<SetPlan>,
    /// A GlusterFS brick: when the session has several (the bricks of a
    /// distributed volume, all on this node), a prune keeps what any of
    /// them holds (see [`SessionPlan::volume_bricks`] and `brick::volume`).
    pub gluster: bool,
}

/// A session as the monitor runs it.
#[derive(Debug, Clone)]
pub struct SessionPlan {
    /// Row id of the session in the state database.
    pub session_id: SessionId,
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
    /// The GlusterFS master volume's topology recorded at `create`.
    pub topology: Option<Topology>,
    /// Set when the volume no longer has that topology (see
    /// [`super::watch_volume`]); shared by every worker.
    pub volume_changed: VolumeChanged,
    /// Every brick of the session, shared by its workers: a brick added
    /// to the volume while the session runs joins it (see
    /// [`super::watch_volume`]).
    pub volume_bricks: VolumeBricks,
    /// The session's directory on the meta-volume, when one is mounted:
    /// where the replica sets are elected across nodes and this node
    /// reports its rows (see [`crate::meta`]).
    pub meta: Option<crate::meta::SessionMeta>,
    /// The master volume's rebalance, as the monitor last saw it (see
    /// `monitor::rebalance`).
    pub rebalance: super::rebalance::RebalanceWatch,
    /// What the replica sets' members hold for healing, as the monitor
    /// last saw it (see `monitor::heal`).
    pub heals: super::heal::HealWatch,
    /// The epoch of its replica set the Active worker ships under, declared
    /// on every stream to the slave (see `monitor::fence`); `None` for a
    /// brick of no set.
    pub fence: Option<crate::proto::Fence>,
}

/// The session's bricks, as the workers' view of the volume reads them,
/// and the files one worker hands to another (see
/// `ship::ShipReport::handed_off`). Clones share them.
///
/// The volume's namespace is spread over its distribute legs: a lone
/// brick, or a replica set, which holds its part on each member. The view
/// reads each set through its Active member (the one that ships); a
/// Passive member may be down and keep names the volume removed since.
#[derive(Debug, Clone, Default)]
pub struct VolumeBricks(std::sync::Arc<std::sync::Mutex<SharedBricks>>);

#[derive(Debug, Default)]
struct SharedBricks {
    /// Bricks of no replica set, each a leg of its own.
    lone: Vec<PathBuf>,
    /// Each replica set's members that hold content (not the arbiter),
    /// in brick order.
    sets: Vec<(String, Vec<PathBuf>)>,
    /// Each set's Active member, while it has one.
    active: std::collections::HashMap<String, PathBuf>,
    handed: std::collections::HashMap<PathBuf, Vec<RelPath>>,
}

/// Most files waiting to be handed to one brick's worker (memory stays
/// bounded; beyond it the queue starts over, and a warning says so).
const HANDED_MAX: usize = 100_000;

impl VolumeBricks {
    /// The view of `lone` bricks and replica `sets` (name and members
    /// holding content).
    pub fn new(lone: Vec<PathBuf>, sets: Vec<(String, Vec<PathBuf>)>) -> VolumeBricks {
        VolumeBricks(std::sync::Arc::new(std::sync::Mutex::new(SharedBricks {
            lone,
            sets,
            ..Default::default()
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SharedBricks> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A brick added to the volume (a leg of its own).
    pub fn add(&self, brick: PathBuf) {
        self.lock().lone.push(brick);
    }

    /// `brick` is now the Active member of `set` (`None`: it stepped down).
    pub fn set_active(&self, set: &str, brick: Option<&Path>) {
        let mut shared = self.lock();
        match brick {
            Some(b) => shared.active.insert(set.to_owned(), b.to_owned()),
            None => shared.active.remove(set),
        };
    }

    /// Gives `path` to the worker of `brick` to send.
    pub fn hand(&self, brick: PathBuf, path: RelPath) {
        let mut shared = self.lock();
        let queue = shared.handed.entry(brick).or_default();
        if queue.len() >= HANDED_MAX {
            tracing::warn!("more than {HANDED_MAX} files handed between bricks: some are dropped");
            queue.clear();
        }
        queue.push(path);
    }

    /// The files handed to the worker of `brick` so far.
    pub fn take_handed(&self, brick: &Path) -> Vec<RelPath> {
        self.lock().handed.remove(brick).unwrap_or_default()
    }

    /// The bricks that together hold the volume, `first` (the brick of the
    /// asking worker, which ships its leg) first; empty while the volume
    /// has one leg. Another set is read through its Active member, or,
    /// while it has none (a takeover), through all its members: a name
    /// kept a moment too long is better than one removed that the volume
    /// holds.
    pub fn seen_from(&self, first: &Path) -> Vec<PathBuf> {
        let shared = self.lock();
        if shared.lone.len() + shared.sets.len() < 2 {
            return Vec::new();
        }
        let mut out = vec![first.to_owned()];
        out.extend(shared.lone.iter().filter(|b| *b != first).cloned());
        for (name, members) in &shared.sets {
            if members.iter().any(|m| m == first) {
                continue;
            }
            match shared.active.get(name) {
                Some(active) => out.push(active.clone()),
                None => out.extend(members.iter().cloned()),
            }
        }
        out
    }
}

/// Why the master volume can no longer be copied as it was planned: its
/// topology changed while the session ran. Clones share one value.
#[derive(Debug, Clone, Default)]
pub struct VolumeChanged(std::sync::Arc<std::sync::Mutex<Option<String>>>);

impl VolumeChanged {
    pub fn set(&self, why: String) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    }

    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
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
            self.fence.as_ref(),
        )
        .await
        .map(|(conn, mut link)| {
            link.set_throttle(self.throttle.clone());
            (conn, link)
        })
    }
}

/// Why a stored session cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("session {session}: stored settings: {source}")]
    Config {
        session: String,
        source: crate::session::config::ConfigError,
    },
    #[error("slave {host}: stored host key: {reason}")]
    HostKey { host: String, reason: String },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Topology(#[from] crate::volume::VolumeError),
    #[error(
        "replica set {set} of {vol} has bricks on other nodes ({remote}), and no meta-volume is mounted at {mount}: each node's member would ship as Active; enable GlusterFS's shared storage (gluster volume set all cluster.enable-shared-storage enable)"
    )]
    NoMetaVolume {
        set: String,
        vol: String,
        remote: String,
        mount: &'static str,
    },
}

/// The `change-detector` of a brick: GlusterFS's changelogs where the
/// brick is one of a GlusterFS volume or has them (or they are asked for),
/// else georep's journal hook. A brick `gluster volume info` names is a
/// GlusterFS brick even before its process has made its changelog
/// directory (just added, on a loaded machine): its worker waits for the
/// changelog rather than watching a GlusterFS brick as a plain directory.
fn change_source(
    config: &SessionConfig,
    brick: &Path,
    journal_dir: &Path,
    of_volume: bool,
) -> ChangeSource {
    let gluster = match config.change_detector {
        ChangeDetector::Glusterfs => true,
        ChangeDetector::Notify => false,
        ChangeDetector::Auto => of_volume || GlusterBrick::detect(brick),
    };
    if gluster {
        ChangeSource::Glusterfs(GlusterBrick::new(brick))
    } else {
        ChangeSource::Notify(journal_dir.to_owned())
    }
}

/// Resolves a stored session into what the monitor runs.
pub fn plan(home: &Home, session: &SessionRecord) -> Result<SessionPlan, PlanError> {
    let named = || format!("{} -> {}", session.master_vol, session.slave);
    let config = SessionConfig::from_json(&session.config).map_err(|source| PlanError::Config {
        session: named(),
        source,
    })?;
    let host_key =
        ssh::parse_public_key(&session.host_key).map_err(|reason| PlanError::HostKey {
            host: session.slave.host.clone(),
            reason,
        })?;
    let state = home.state()?;
    let records = state.bricks(session.id)?;
    let set_of = |b: &crate::state::BrickRecord| {
        let name = b.subvolume.clone()?;
        let members = records
            .iter()
            .filter(|m| m.subvolume.as_ref() == Some(&name))
            .map(|m| m.id)
            .collect();
        Some(SetPlan {
            name,
            members,
            arbiter: b.arbiter,
        })
    };
    let topology = Topology::load(&home.session_topology(session.id))?;
    let bricks: Vec<BrickPlan> = records
        .iter()
        .map(|b| BrickPlan {
            set: set_of(b),
            ..brick_plan(
                home,
                session.id,
                &config,
                b.id,
                b.brick.path(),
                topology.is_some(),
            )
        })
        .collect();
    // The legs of a distributed volume hold one namespace between them
    // (see `VolumeBricks`); a replica set alone is one leg.
    let volume_bricks = if bricks.iter().all(|b| b.gluster) {
        let mut sets: Vec<(String, Vec<PathBuf>)> = Vec::new();
        let mut lone = Vec::new();
        for b in &bricks {
            match &b.set {
                None => lone.push(b.brick.clone()),
                Some(set) => {
                    let at = match sets.iter().position(|(n, _)| *n == set.name) {
                        Some(at) => at,
                        None => {
                            sets.push((set.name.clone(), Vec::new()));
                            sets.len() - 1
                        }
                    };
                    if !set.arbiter {
                        sets[at].1.push(b.brick.clone());
                    }
                }
            }
        }
        VolumeBricks::new(lone, sets)
    } else {
        VolumeBricks::default()
    };
    let meta = crate::meta::MetaVolume::mounted_at(Path::new(crate::meta::DEFAULT_MOUNT))
        .map(|m| m.session(&session.master_vol, &session.slave));
    if let (None, Some(t)) = (&meta, &topology) {
        refuse_sets_across_nodes(t, &bricks)?;
    }
    Ok(SessionPlan {
        session_id: session.id,
        master_vol: session.master_vol.to_string(),
        slave: session.slave.to_string(),
        state_home: home.root().to_owned(),
        target: SshTarget {
            host: session.slave.host.clone(),
            port: config.ssh_port,
            user: session.slave.user.clone(),
        },
        host_key,
        auth: Auth::Key(home.session_key(session.id)),
        slave_command: config.slave_command(&session.slave.volume),
        throttle: crate::transport::throttle::Throttle::new(config.bandwidth_limit)
            .map(std::sync::Arc::new),
        config,
        bricks,
        topology,
        volume_changed: VolumeChanged::default(),
        volume_bricks,
        meta,
        rebalance: Default::default(),
        heals: Default::default(),
        fence: None,
    })
}

/// A replica set with members on other nodes can only be elected on a
/// lock every node sees: without the meta-volume, refused, naming them.
fn refuse_sets_across_nodes(t: &Topology, bricks: &[BrickPlan]) -> Result<(), PlanError> {
    for b in bricks.iter().filter(|b| b.set.is_some()) {
        let Some(set) = t.subvolume_of(&b.brick) else {
            continue;
        };
        let remote: Vec<String> = set
            .bricks
            .iter()
            .filter(|m| !crate::volume::is_local(&m.host))
            .map(|m| m.to_string())
            .collect();
        if !remote.is_empty() {
            return Err(PlanError::NoMetaVolume {
                set: set.name.clone(),
                vol: t.name.clone(),
                remote: remote.join(", "),
                mount: crate::meta::DEFAULT_MOUNT,
            });
        }
    }
    Ok(())
}

/// What the worker of brick `id` at `brick` of session `session` needs;
/// `of_volume`: the brick is one of the GlusterFS volume's, as recorded
/// or as `gluster volume info` lists it.
pub fn brick_plan(
    home: &Home,
    session: SessionId,
    config: &SessionConfig,
    id: BrickId,
    brick: &Path,
    of_volume: bool,
) -> BrickPlan {
    let home_abs = std::path::absolute(home.root()).unwrap_or_else(|_| home.root().to_owned());
    let journal_dir = journal_dir(&home.session_dir(session), id);
    let mut exclude = if home_abs.starts_with(brick) {
        vec![home_abs.clone()]
    } else {
        Vec::new()
    };
    let source = change_source(config, brick, &journal_dir, of_volume);
    // GlusterFS's own tree is never replicated, whichever source.
    let gluster = of_volume
        || matches!(source, ChangeSource::Glusterfs(_))
        || brick.join(".glusterfs").is_dir();
    if gluster {
        exclude.extend(internal_names(brick).iter().map(|n| brick.join(n)));
    }
    BrickPlan {
        brick_id: id,
        brick: brick.to_owned(),
        journal_dir,
        source,
        exclude,
        gluster,
        set: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Another set is read through its Active member, or through all its
    /// members while it has none; the asking worker's own set only
    /// through itself; a lone replica set is no distributed volume.
    #[test]
    fn each_leg_is_seen_through_one_brick() {
        let p = |s: &str| PathBuf::from(s);
        let view = VolumeBricks::new(
            vec![p("/c")],
            vec![
                ("v-replicate-0".into(), vec![p("/a1"), p("/a2")]),
                ("v-replicate-1".into(), vec![p("/b1"), p("/b2")]),
            ],
        );
        assert_eq!(
            view.seen_from(&p("/a2")),
            [p("/a2"), p("/c"), p("/b1"), p("/b2")]
        );
        view.set_active("v-replicate-1", Some(&p("/b2")));
        assert_eq!(view.seen_from(&p("/a1")), [p("/a1"), p("/c"), p("/b2")]);
        assert_eq!(
            view.seen_from(&p("/c")),
            [p("/c"), p("/a1"), p("/a2"), p("/b2")]
        );
        view.set_active("v-replicate-1", None);
        assert_eq!(view.seen_from(&p("/a1")).len(), 4);
        let one_set = VolumeBricks::new(vec![], vec![("v".into(), vec![p("/a1"), p("/a2")])]);
        assert!(one_set.seen_from(&p("/a1")).is_empty());
    }

    /// A brick of the volume whose process has not made its directories
    /// yet is still a GlusterFS brick: never watched as a plain directory,
    /// its files shipped with the times GlusterFS's clients see.
    #[test]
    fn a_brick_of_the_volume_is_a_glusterfs_brick_before_it_has_changelogs() {
        let d = tempfile::tempdir().unwrap();
        let home = Home::new(d.path().join("home"));
        let brick = d.path().join("new-brick");
        std::fs::create_dir(&brick).unwrap();
        let config = SessionConfig::default();
        let id = BrickId::new(1);
        let plan = brick_plan(&home, SessionId::new(1), &config, id, &brick, true);
        assert!(matches!(plan.source, ChangeSource::Glusterfs(_)));
        assert!(plan.gluster);
        let plan = brick_plan(&home, SessionId::new(1), &config, id, &brick, false);
        assert!(matches!(plan.source, ChangeSource::Notify(_)));
        assert!(!plan.gluster);
    }
}
