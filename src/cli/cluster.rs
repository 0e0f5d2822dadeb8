//! One session for the whole pool: the hooks by which `create`, `start`,
//! `stop`, `pause`, `resume`, `config` and `delete`, run on one node, reach
//! every master node of the volume, through the session's definition on
//! the meta-volume (`crate::meta::registry`); `geo-rep agent` (see
//! `agent.rs`) applies it on each node.
//!
//! A session is cluster-wide when the meta-volume is mounted and GlusterFS
//! knows the master volume at `create`; every later command finds its
//! definition there. Without a meta-volume, or for plain directories,
//! every command acts on this node only, as it always did.
//!
//! Keys: each node makes its own session key and publishes the public
//! half; `create` installs all of them on the slave, each with the forced
//! command, as GlusterFS's `gsec_create` collects every node's key. A
//! private key never leaves its node (the meta-volume is readable by every
//! client of the pool), and each key still serves one session's slave
//! directory only.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::Home;
use crate::meta::registry::{names, Definition, Desired, NodeKey};
use crate::meta::{MetaVolume, SessionMeta};
use crate::session::{SessionId, SlaveUrl, VolumeName};
use crate::transport::ssh;

/// How long `create` waits for every node's agent to publish its key.
const KEY_WAIT: Duration = Duration::from_secs(60);

/// The meta-volume, if mounted here.
pub fn meta_volume() -> Option<MetaVolume> {
    MetaVolume::mounted_at(std::path::Path::new(crate::meta::DEFAULT_MOUNT))
}

/// The session's directory on the meta-volume and its live definition,
/// when the session from `vol` to `slave` is cluster-wide.
pub fn find(
    vol: &VolumeName,
    slave: &SlaveUrl,
) -> anyhow::Result<Option<(SessionMeta, Definition)>> {
    let Some(meta) = meta_volume() else {
        return Ok(None);
    };
    let s = meta.session(vol, slave);
    Ok(s.live_definition()?
        .filter(|d| names(d, vol, slave))
        .map(|d| (s, d)))
}

/// What `create` needs to make the session cluster-wide.
pub struct Pool {
    pub meta: SessionMeta,
    /// Every brick host of the volume, in brick order, once each.
    pub hosts: Vec<String>,
}

/// The pool of the volume, when `create` makes a cluster-wide session.
pub fn pool(vol: &VolumeName, slave: &SlaveUrl) -> anyhow::Result<Option<Pool>> {
    let Some(meta) = meta_volume() else {
        return Ok(None);
    };
    if !crate::volume::gluster_present() {
        return Ok(None);
    }
    let Ok(topology) = crate::volume::volume_info(vol.as_str()) else {
        return Ok(None);
    };
    let mut hosts: Vec<String> = Vec::new();
    for b in topology.bricks() {
        if !hosts.contains(&b.host) {
            hosts.push(b.host.clone());
        }
    }
    Ok(Some(Pool {
        meta: meta.session(vol, slave),
        hosts,
    }))
}

/// The first definition of a new session (not installed yet), or an error
/// if a live one exists.
pub fn define(
    pool: &Pool,
    vol: &VolumeName,
    slave: &SlaveUrl,
    host_key: String,
    config: String,
    slave_had_data: bool,
) -> anyhow::Result<Definition> {
    let uid = {
        let seed = format!(
            "{}-{}-{:?}",
            node_name(),
            std::process::id(),
            Instant::now()
        );
        let t = crate::session::Timestamp::now().nanos();
        blake3::hash(format!("{seed}-{t}").as_bytes()).to_hex()[..16].to_owned()
    };
    pool.meta.update(|old| {
        if let Some(d) = old.filter(|d| d.desired != Desired::Deleted) {
            bail!(
                "a session from {vol} to {slave} already exists on the pool (created by {}; see the meta-volume {})",
                d.by,
                crate::meta::DEFAULT_MOUNT
            );
        }
        Ok(Definition {
            uid,
            generation: 0,
            vol: vol.to_string(),
            slave: slave.to_string(),
            desired: Desired::Created,
            installed: false,
            host_key,
            config,
            checkpoint: None,
            slave_had_data,
            reset_sync_time: false,
            by: node_name(),
        })
    })
}

/// This node's host name, as MASTER NODE shows it.
pub fn node_name() -> String {
    super::status::node_name()
}

/// The brick hosts of `hosts` that are this node.
fn own_hosts(hosts: &[String]) -> Vec<String> {
    hosts
        .iter()
        .filter(|h| crate::volume::is_local(h))
        .cloned()
        .collect()
}

/// Where this node keeps its private key for incarnation `uid` until its
/// share of the session is set up.
fn pending_key(home: &Home, uid: &str) -> PathBuf {
    home.root().join("cluster-keys").join(format!("{uid}.pem"))
}

/// This node's private key for `def` (made on first use) after publishing
/// its public half for the brick hosts `hosts` of the volume that are
/// this node.
pub fn own_key(
    home: &Home,
    meta: &SessionMeta,
    def: &Definition,
    hosts: &[String],
) -> anyhow::Result<String> {
    let path = pending_key(home, &def.uid);
    let private = match std::fs::read_to_string(&path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let comment = format!("georep:{}@{}", def.vol, node_name());
            let (private, _) = ssh::generate_session_key(&comment)?;
            if let Some(dir) = path.parent() {
                crate::fsutil::create_private_dir(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            crate::fsutil::write_private_file(&path, private.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            private
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let key = russh::keys::PrivateKey::from_openssh(&private)
        .with_context(|| format!("reading the session key {}", path.display()))?;
    let public = key
        .public_key()
        .to_openssh()
        .context("encoding the session's public key")?;
    meta.publish_key(&NodeKey {
        node: node_name(),
        hosts: own_hosts(hosts),
        public,
        uid: def.uid.clone(),
    })?;
    Ok(private)
}

/// This node's private key for incarnation `uid`, if it made one.
pub fn pending_private(home: &Home, uid: &str) -> Option<String> {
    std::fs::read_to_string(pending_key(home, uid)).ok()
}

/// Forgets this node's pending key of incarnation `uid`.
pub fn drop_pending_key(home: &Home, uid: &str) {
    let _ = std::fs::remove_file(pending_key(home, uid));
}

/// Waits until every brick host of the pool has a published key of
/// `def`'s incarnation; the keys, or an error naming the hosts without
/// one.
pub fn await_keys(pool: &Pool, def: &Definition) -> anyhow::Result<Vec<NodeKey>> {
    let deadline = Instant::now() + KEY_WAIT;
    loop {
        let keys = pool.meta.keys(&def.uid)?;
        let missing: Vec<&String> = pool
            .hosts
            .iter()
            .filter(|h| !keys.iter().any(|k| k.hosts.contains(h)))
            .collect();
        if missing.is_empty() {
            return Ok(keys);
        }
        if Instant::now() >= deadline {
            bail!(
                "node(s) {} of volume {} published no session key within {} s: run `geo-rep agent` there (the geo-rep-agent service), then create again",
                missing.iter().map(|h| h.as_str()).collect::<Vec<_>>().join(", "),
                def.vol,
                KEY_WAIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Records which incarnation and generation of the cluster-wide session
/// this node's session `id` has applied.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Binding {
    pub uid: String,
    pub generation: u64,
}

fn binding_path(home: &Home, id: SessionId) -> PathBuf {
    home.session_dir(id).join("cluster.json")
}

/// The incarnation local session `id` belongs to, if it is a share of a
/// cluster-wide session.
pub fn binding(home: &Home, id: SessionId) -> Option<Binding> {
    let b = std::fs::read(binding_path(home, id)).ok()?;
    serde_json::from_slice(&b).ok()
}

pub fn bind(home: &Home, id: SessionId, b: &Binding) -> anyhow::Result<()> {
    let path = binding_path(home, id);
    crate::fsutil::write_private_file(&path, &serde_json::to_vec(b)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Sets the desired state of a cluster-wide session (the command has
/// already applied it on this node); returns the new definition.
pub fn set_desired(meta: &SessionMeta, to: Desired) -> anyhow::Result<Definition> {
    meta.update(|old| {
        let mut d = old.context("the session's definition is gone from the meta-volume")?;
        d.desired = to;
        d.by = node_name();
        Ok(d)
    })
}

/// Says where the other nodes stand after a cluster-wide command.
pub fn announce(def: &Definition) {
    println!(
        "the other nodes of {} apply it through their agent (generation {} on the meta-volume)",
        def.vol, def.generation
    );
}

/// Shares this node's settings and checkpoint of session `id` with every
/// node, if the session is cluster-wide.
pub fn share_config(home: &Home, vol: &VolumeName, slave: &SlaveUrl) -> anyhow::Result<()> {
    let Some((meta, _)) = find(vol, slave)? else {
        return Ok(());
    };
    let state = home.state()?;
    let s = super::find_session(&state, vol, slave)?;
    let def = meta.update(|old| {
        let mut d = old.context("the session's definition is gone from the meta-volume")?;
        d.config = s.config.clone();
        d.checkpoint = s.checkpoint.map(|t| t.nanos());
        d.by = node_name();
        Ok::<_, anyhow::Error>(d)
    })?;
    if let Some(b) = binding(home, s.id).filter(|b| b.uid == def.uid) {
        bind(
            home,
            s.id,
            &Binding {
                generation: def.generation,
                ..b
            },
        )?;
    }
    announce(&def);
    Ok(())
}

/// A lifecycle command, as run on one node for every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Start { foreground: bool },
    Stop,
    Pause,
    Resume,
}

/// Serialises this node's agent and the commands run on this node, so
/// an agent never undoes a command's local step before the command has
/// recorded it on the meta-volume. Held until dropped.
pub struct ApplyLock(#[allow(dead_code)] std::fs::File);

pub fn apply_lock(home: &Home) -> anyhow::Result<ApplyLock> {
    let (f, _) = lock_in_home(home, "agent-apply.lock", false)?;
    Ok(ApplyLock(f))
}

/// Locks `<home>/<name>` (exclusive `flock`), waiting for it unless
/// `nonblocking`; the file, and whether the lock was taken.
pub fn lock_in_home(
    home: &Home,
    name: &str,
    nonblocking: bool,
) -> anyhow::Result<(std::fs::File, bool)> {
    use rustix::fs::FlockOperation::{LockExclusive, NonBlockingLockExclusive};
    let path = home.root().join(name);
    crate::fsutil::create_private_dir(home.root())
        .with_context(|| format!("creating {}", home.root().display()))?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let taken = match rustix::fs::flock(
        &f,
        if nonblocking {
            NonBlockingLockExclusive
        } else {
            LockExclusive
        },
    ) {
        Ok(()) => true,
        Err(rustix::io::Errno::WOULDBLOCK) if nonblocking => false,
        Err(e) => return Err(e).with_context(|| format!("locking {}", path.display())),
    };
    Ok((f, taken))
}

/// Runs `cmd` on this node and records it for every node when the session
/// is cluster-wide; `Ok(false)` when it is not (the caller runs the
/// command on this node only, as before).
pub fn lifecycle(
    home: &Home,
    vol: &VolumeName,
    slave: &SlaveUrl,
    cmd: Lifecycle,
    force: bool,
) -> anyhow::Result<bool> {
    let Some((meta, def)) = find(vol, slave)? else {
        return Ok(false);
    };
    let running = matches!(def.desired, Desired::Started | Desired::Paused);
    let (ok, to) = match cmd {
        Lifecycle::Start { .. } => (!running, Desired::Started),
        Lifecycle::Stop => (running, Desired::Stopped),
        Lifecycle::Pause => (def.desired == Desired::Started, Desired::Paused),
        Lifecycle::Resume => (def.desired == Desired::Paused, Desired::Started),
    };
    if !ok && !force {
        bail!(
            "session {vol} -> {slave} is {} on the pool (set by {}); `force` to {} anyway",
            def.desired,
            def.by,
            match cmd {
                Lifecycle::Start { .. } => "start",
                Lifecycle::Stop => "stop",
                Lifecycle::Pause => "pause",
                Lifecycle::Resume => "resume",
            }
        );
    }
    let lock = apply_lock(home)?;
    let local = home.state()?.find_session(vol, slave)?;
    let def = match (cmd, &local) {
        (Lifecycle::Start { foreground: true }, _) => {
            // Runs here until stopped: the pool learns of it first.
            let def = set_desired(&meta, to)?;
            announce(&def);
            drop(lock);
            super::lifecycle::start(home, vol, slave, force, true)?;
            return Ok(true);
        }
        (_, None) => {
            // This node's agent has not set up its share yet: it will,
            // and apply the pool's state then.
            let def = set_desired(&meta, to)?;
            println!("this node has no share of the session yet; its agent sets it up");
            def
        }
        (Lifecycle::Start { .. }, Some(_)) => {
            super::lifecycle::start(home, vol, slave, force, false)?;
            set_desired(&meta, to)?
        }
        (Lifecycle::Stop, Some(l)) => {
            let def = set_desired(&meta, to)?;
            // Not running here (not yet started by the agent, or died):
            // marked stopped all the same.
            let alive = super::lifecycle::monitor_alive(l.monitor_pid);
            super::lifecycle::stop(home, vol, slave, force || !alive)?;
            def
        }
        (Lifecycle::Pause, Some(_)) => {
            super::lifecycle::pause(home, vol, slave, true)?;
            set_desired(&meta, to)?
        }
        (Lifecycle::Resume, Some(_)) => {
            super::lifecycle::resume(home, vol, slave, true)?;
            set_desired(&meta, to)?
        }
    };
    announce(&def);
    Ok(true)
}
