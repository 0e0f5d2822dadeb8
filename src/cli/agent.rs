//! `geo-rep agent`: this node's share of every cluster-wide session.
//!
//! Runs on each master node (the `geo-rep-agent` systemd unit) and, every
//! [`POLL`], brings this node in line with each session's definition on
//! the meta-volume (see `cluster.rs`): it publishes this node's session
//! key while `create` collects them, sets up this node's session for its
//! bricks of the volume once the keys are on the slave, starts, stops,
//! pauses and resumes the node's monitor, applies the settings and the
//! checkpoint, and deletes the node's session. It compares what is with
//! what should be, so a node that was down, or whose agent was, applies
//! the latest word when its agent runs again, and a command is never
//! applied twice.
//!
//! Without a mounted meta-volume (or with one that stopped answering) it
//! says so once in its log and waits; a session it cannot apply is logged
//! once per distinct error and tried again at the next round, a monitor
//! that will not start at most every [`RESTART_EVERY`].
//!
//! The monitors it starts are processes of their own (as `start` makes
//! them): stopping the agent does not stop replication.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::cluster::{self, Binding};
use super::lifecycle::monitor_alive;
use super::Home;
use crate::meta::registry::{Definition, Desired};
use crate::meta::SessionMeta;
use crate::session::config::SessionConfig;
use crate::session::{SlaveUrl, Timestamp, VolumeName};
use crate::state::{NewSession, SessionState};

/// How often the agent looks at the meta-volume.
const POLL: Duration = Duration::from_secs(1);

/// How long after a failed start the agent tries again.
const RESTART_EVERY: Duration = Duration::from_secs(10);

/// What the agent has already said, so a lasting condition is logged once.
#[derive(Default)]
struct Said(HashMap<String, String>);

impl Said {
    /// Logs `msg` under `key` unless it is what was said last.
    fn warn(&mut self, key: &str, msg: String) {
        if self.0.get(key) != Some(&msg) {
            tracing::warn!("{msg}");
            self.0.insert(key.to_owned(), msg);
        }
    }

    /// The condition under `key` is over; `msg` says so if it had been said.
    fn clear(&mut self, key: &str, msg: impl FnOnce() -> String) {
        if self.0.remove(key).is_some() {
            tracing::info!("{}", msg());
        }
    }
}

pub fn agent(home: &Home) -> anyhow::Result<()> {
    let _one = only_agent(home)?;
    tracing::info!(
        node = %cluster::node_name(),
        home = %home.root().display(),
        pid = std::process::id(),
        "agent starting"
    );
    let mut said = Said::default();
    let mut tried: HashMap<String, Instant> = HashMap::new();
    loop {
        match cluster::meta_volume() {
            None => said.warn(
                "meta",
                format!(
                    "no meta-volume mounted at {}: waiting for it (GlusterFS's shared storage: `gluster volume set all cluster.enable-shared-storage enable`)",
                    crate::meta::DEFAULT_MOUNT
                ),
            ),
            Some(meta) => {
                said.clear("meta", || {
                    format!("meta-volume mounted at {}", crate::meta::DEFAULT_MOUNT)
                });
                match meta.sessions() {
                    Err(e) => said.warn("list", format!("{e}")),
                    Ok(sessions) => {
                        said.clear("list", || "meta-volume readable again".into());
                        for s in sessions {
                            let key = s.name();
                            match reconcile(home, &s, &mut tried) {
                                Ok(()) => said.clear(&key, || format!("session {key}: applied")),
                                Err(e) => said.warn(&key, format!("session {key}: {e:#}")),
                            }
                        }
                    }
                }
            }
        }
        std::thread::sleep(POLL);
    }
}

/// One agent per home: an exclusive lock held for its life.
fn only_agent(home: &Home) -> anyhow::Result<std::fs::File> {
    let (f, taken) = cluster::lock_in_home(home, "agent.lock", true)?;
    if !taken {
        bail!(
            "another agent runs with the home {} (it holds agent.lock there)",
            home.root().display()
        );
    }
    Ok(f)
}

/// Brings this node's share of the session of `meta` in line with its
/// definition.
fn reconcile(
    home: &Home,
    meta: &SessionMeta,
    tried: &mut HashMap<String, Instant>,
) -> anyhow::Result<()> {
    let Some(def) = meta.definition()? else {
        return Ok(());
    };
    let vol: VolumeName = def.vol.parse()?;
    let slave: SlaveUrl = def.slave.parse()?;
    let _lock = cluster::apply_lock(home)?;
    let mut state = home.state()?;
    let mut local = state.find_session(&vol, &slave)?;
    if let Some(l) = &local {
        match cluster::binding(home, l.id) {
            None if def.desired == Desired::Deleted => return Ok(()),
            None => bail!(
                "this node has a session from {vol} to {slave} of its own (not the pool's); delete it here to take this node's share of the pool's"
            ),
            Some(b) if b.uid != def.uid || def.desired == Desired::Deleted => {
                // Deleted, or an earlier incarnation deleted while this
                // node was away.
                stop_local(home, &vol, &slave, l.monitor_pid)?;
                let reset = b.uid == def.uid && def.reset_sync_time;
                super::delete::delete_local(home, l, reset)?;
                tracing::info!("deleted this node's share of {vol} -> {slave}");
                local = None;
            }
            Some(_) => {}
        }
    }
    if def.desired == Desired::Deleted {
        cluster::drop_pending_key(home, &def.uid);
        return Ok(());
    }
    let local = match local {
        Some(l) => l,
        None => {
            let Some(l) = set_up(home, &mut state, meta, &def, &vol, &slave)? else {
                return Ok(());
            };
            l
        }
    };
    let bound = cluster::binding(home, local.id).context("the session lost its binding")?;
    if bound.generation < def.generation {
        apply_settings(&state, &local, &def)?;
        cluster::bind(
            home,
            local.id,
            &Binding {
                generation: def.generation,
                ..bound
            },
        )?;
    }
    let alive = monitor_alive(local.monitor_pid);
    match def.desired {
        Desired::Created | Desired::Deleted => {}
        Desired::Started | Desired::Paused => {
            if !alive {
                let due = tried
                    .get(&def.uid)
                    .is_none_or(|t| t.elapsed() >= RESTART_EVERY);
                if !due {
                    return Ok(());
                }
                tried.insert(def.uid.clone(), Instant::now());
                tracing::info!("starting this node's share of {vol} -> {slave}");
                super::lifecycle::start(home, &vol, &slave, true, false)?;
            }
            let now = state.session(local.id)?.state;
            if def.desired == Desired::Paused && now != SessionState::Paused {
                super::lifecycle::pause(home, &vol, &slave, true)?;
            } else if def.desired == Desired::Started && now == SessionState::Paused {
                super::lifecycle::resume(home, &vol, &slave, true)?;
            }
        }
        Desired::Stopped => {
            if alive || matches!(local.state, SessionState::Started | SessionState::Paused) {
                tracing::info!("stopping this node's share of {vol} -> {slave}");
                super::lifecycle::stop(home, &vol, &slave, !alive)?;
            }
        }
    }
    Ok(())
}

/// Stops a monitor this node runs for a session about to be deleted.
fn stop_local(
    home: &Home,
    vol: &VolumeName,
    slave: &SlaveUrl,
    pid: Option<u32>,
) -> anyhow::Result<()> {
    if monitor_alive(pid) {
        super::lifecycle::stop(home, vol, slave, false)?;
    }
    Ok(())
}

/// This node's session for the pool's definition `def`, set up once every
/// node's key is on the slave (before that, this node's key is published
/// for `create` to collect). `None` while there is nothing to set up, or
/// when no brick of the volume is on this node.
fn set_up(
    home: &Home,
    state: &mut crate::state::State,
    meta: &SessionMeta,
    def: &Definition,
    vol: &VolumeName,
    slave: &SlaveUrl,
) -> anyhow::Result<Option<crate::state::SessionRecord>> {
    let topology = crate::volume::volume_info(vol.as_str())
        .with_context(|| format!("reading the bricks of {vol}"))?;
    let mut hosts: Vec<String> = Vec::new();
    for b in topology.bricks() {
        if !hosts.contains(&b.host) {
            hosts.push(b.host.clone());
        }
    }
    if !hosts.iter().any(|h| crate::volume::is_local(h)) {
        return Ok(None);
    }
    if !def.installed {
        cluster::own_key(home, meta, def, &hosts)?;
        return Ok(None);
    }
    let Some(private) = cluster::pending_private(home, &def.uid) else {
        bail!(
            "the session's keys were installed on {} without this node's (it published none while `create` ran); delete the session and create it again with this node's agent running",
            slave.host
        );
    };
    let bricks = super::discover::local_bricks(vol)?;
    let topology = super::discover::check_shape(vol, &bricks)?;
    let config = SessionConfig::from_json(&def.config)?;
    let new = NewSession {
        master_vol: vol.clone(),
        slave: slave.clone(),
        port: config.ssh_port,
        host_key: def.host_key.clone(),
        config: def.config.clone(),
        bricks: bricks
            .into_iter()
            .map(crate::session::Brick::new)
            .collect::<Result<_, _>>()?,
    };
    let record = super::create::record(home, state, &new, topology.as_ref(), &private)?;
    super::create::resume_or_forget_stimes(state, record.id, vol, slave, def.slave_had_data)?;
    if let Some(at) = def.checkpoint {
        state.set_checkpoint(record.id, Some(Timestamp::from_nanos(at)))?;
    }
    cluster::bind(
        home,
        record.id,
        &Binding {
            uid: def.uid.clone(),
            generation: def.generation,
        },
    )?;
    cluster::drop_pending_key(home, &def.uid);
    tracing::info!(
        "set up this node's share of {vol} -> {slave}: brick(s) {}",
        new.bricks
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(Some(record))
}

/// Applies the pool's settings and checkpoint to this node's session; a
/// running monitor re-reads them (SIGHUP, as `systemctl reload`).
fn apply_settings(
    state: &crate::state::State,
    local: &crate::state::SessionRecord,
    def: &Definition,
) -> anyhow::Result<()> {
    let mut changed = false;
    if local.config != def.config {
        SessionConfig::from_json(&def.config)?;
        state.set_config(local.id, &def.config)?;
        changed = true;
    }
    let checkpoint = def.checkpoint.map(Timestamp::from_nanos);
    if local.checkpoint != checkpoint {
        state.set_checkpoint(local.id, checkpoint)?;
    }
    if changed {
        tracing::info!(
            "settings of {} -> {} from the pool (generation {}, by {})",
            local.master_vol,
            local.slave,
            def.generation,
            def.by
        );
        if let Some(pid) = local
            .monitor_pid
            .filter(|_| monitor_alive(local.monitor_pid))
        {
            if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::HUP);
            }
        }
    }
    Ok(())
}
