//! `geo-rep delete MASTERVOL SLAVE [reset-sync-time]`.
//!
//! Removes the session: its rows in the state database, its directory
//! (key, journals, log) and, where the slave is reachable with the
//! operator's credentials, its line in the slave's authorized_keys (found by
//! the session's public key, so other lines are never touched).
//!
//! As in GlusterFS, the bricks' stimes outlive the session unless
//! `reset-sync-time` is given: a session re-created later between the same
//! master volume and slave directory starts from them (a Hybrid Crawl of
//! what changed since) instead of from nothing. They are used only if the
//! slave directory still holds data when the session is re-created; into
//! an empty one, the first sync is always complete.

use std::path::PathBuf;

use anyhow::{bail, Context};

use super::lifecycle::{monitor_alive, runtime};
use super::{find_session, Home};
use crate::meta::registry::Desired;
use crate::session::config::SessionConfig;
use crate::session::{SlaveUrl, VolumeName};
use crate::state::SessionRecord;
use crate::transport::ssh::{self, Auth, HostKeyPolicy, SshConnection, SshTarget};

pub fn delete(
    home: &Home,
    vol: &VolumeName,
    slave: &SlaveUrl,
    reset_sync_time: bool,
    identity: Option<PathBuf>,
) -> anyhow::Result<()> {
    let state = home.state()?;
    let cluster = super::cluster::find(vol, slave)?;
    // On a pool, a node whose agent has not set up its share yet may
    // still delete the session for every node.
    let mut session = match (&cluster, state.find_session(vol, slave)?) {
        (_, Some(s)) => Some(s),
        (Some(_), None) => None,
        (None, None) => Some(find_session(&state, vol, slave)?),
    };
    if let Some((_, def)) = &cluster {
        if matches!(def.desired, Desired::Started | Desired::Paused) {
            bail!(
                "session {vol} -> {slave} is {} on the pool (set by {}); stop it first with `geo-rep stop {vol} {slave}`",
                def.desired,
                def.by
            );
        }
        // Stopped on the pool, and this node's agent has not got round to
        // its monitor yet: it would stop it the same way.
        if session
            .as_ref()
            .is_some_and(|s| monitor_alive(s.monitor_pid))
        {
            super::lifecycle::stop(home, vol, slave, false)?;
            session = Some(find_session(&state, vol, slave)?);
        }
    }
    if let Some(s) = session.as_ref().filter(|s| monitor_alive(s.monitor_pid)) {
        bail!(
            "session {vol} -> {slave} is running (monitor pid {}); stop it first with `geo-rep stop {vol} {slave}`",
            s.monitor_pid.unwrap_or(0)
        );
    }
    let (config, host_key) = match (&session, &cluster) {
        (Some(s), _) => (s.config.clone(), s.host_key.clone()),
        (None, Some((_, def))) => (def.config.clone(), def.host_key.clone()),
        (None, None) => unreachable_session(vol, slave)?,
    };
    let config = SessionConfig::from_json(&config)?;
    // Every node's key of a pool's session, else this node's.
    let blobs = match (&cluster, &session) {
        (Some((meta, def)), _) => meta
            .keys(&def.uid)?
            .iter()
            .map(|k| blob(&k.public))
            .collect::<anyhow::Result<Vec<_>>>(),
        (None, Some(session)) => session_public(home, session).and_then(|p| Ok(vec![blob(&p)?])),
        (None, None) => unreachable_session(vol, slave)?,
    };
    match blobs.and_then(|b| remove_slave_keys(slave, &host_key, &config, identity, &b)) {
        Ok(1) => println!(
            "removed the session key from {} on {}",
            keys_file_shown(&config),
            slave.host
        ),
        Ok(n) if n > 1 => println!(
            "removed the session keys of {n} nodes from {} on {}",
            keys_file_shown(&config),
            slave.host
        ),
        Ok(_) => println!(
            "the session key was not in {} on {} (already removed)",
            keys_file_shown(&config),
            slave.host
        ),
        Err(e) => eprintln!(
            "geo-rep: warning: could not remove the session key from {} on {}: {e:#}; remove the line(s) ending in `georep:{vol}@…` there by hand",
            keys_file_shown(&config),
            slave.host
        ),
    }
    let _lock = match &cluster {
        Some((meta, _)) => {
            let lock = super::cluster::apply_lock(home)?;
            let def = meta.update(|old| {
                let mut d = old.context("the session's definition is gone from the meta-volume")?;
                d.desired = Desired::Deleted;
                d.reset_sync_time = reset_sync_time;
                d.by = super::cluster::node_name();
                Ok::<_, anyhow::Error>(d)
            })?;
            if let Err(e) = meta.remove_keys() {
                eprintln!("geo-rep: warning: the session keys stay on the meta-volume: {e}");
            }
            super::cluster::announce(&def);
            Some(lock)
        }
        None => None,
    };
    match &session {
        Some(s) => delete_local(home, s, reset_sync_time)?,
        None => println!("this node had no share of the session yet"),
    }
    println!("Deleting geo-replication session between {vol} & {slave} has been successful");
    Ok(())
}

/// Deletes this node's share of a stopped session: its rows, its stimes
/// unless kept, its directory, and its rows on the meta-volume.
pub fn delete_local(
    home: &Home,
    session: &SessionRecord,
    reset_sync_time: bool,
) -> anyhow::Result<()> {
    let state = home.state()?;
    let (vol, slave) = (&session.master_vol, &session.slave);
    if reset_sync_time {
        state.forget_kept_stimes(vol, slave)?;
    } else {
        state.keep_stimes(session.id)?;
    }
    state.delete_session(session.id)?;
    let dir = home.session_dir(session.id);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", dir.display())),
    }
    // The other nodes would show this node's last rows for good.
    if let Some(meta) = super::cluster::meta_volume() {
        if let Err(e) = meta
            .session(vol, slave)
            .withdraw(&super::status::node_name())
        {
            eprintln!("geo-rep: warning: this node's rows stay on the meta-volume: {e}");
        }
    }
    Ok(())
}

/// Neither a session here nor on the pool: `find_session`'s error.
fn unreachable_session<T>(vol: &VolumeName, slave: &SlaveUrl) -> anyhow::Result<T> {
    bail!("no session from {vol} to {slave}")
}

fn keys_file_shown(config: &SessionConfig) -> String {
    if config.authorized_keys_file.is_empty() {
        "~/.ssh/authorized_keys".into()
    } else {
        config.authorized_keys_file.clone()
    }
}

/// The session's public key, from its private key on this node.
fn session_public(home: &Home, session: &SessionRecord) -> anyhow::Result<String> {
    let key_path = home.session_key(session.id);
    let key = russh::keys::load_secret_key(&key_path, None)
        .with_context(|| format!("reading the session key {}", key_path.display()))?;
    key.public_key()
        .to_openssh()
        .context("encoding the session's public key")
}

/// The base64 blob of an OpenSSH public key: unique to the key, and free
/// of shell metacharacters.
fn blob(public: &str) -> anyhow::Result<String> {
    let blob = public
        .split_whitespace()
        .nth(1)
        .context("the session's public key has no key data")?;
    if !blob
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='))
    {
        bail!("the session's public key is not base64");
    }
    Ok(blob.to_owned())
}

/// Removes the lines of the keys `blobs` from the slave's authorized_keys,
/// connecting as the operator (a session key itself can only run `geo-rep
/// slave`). How many lines were removed.
fn remove_slave_keys(
    slave: &SlaveUrl,
    host_key: &str,
    config: &SessionConfig,
    identity: Option<PathBuf>,
    blobs: &[String],
) -> anyhow::Result<usize> {
    let host_key = ssh::parse_public_key(host_key).map_err(anyhow::Error::msg)?;
    let target = SshTarget {
        host: slave.host.clone(),
        port: config.ssh_port,
        user: slave.user.clone(),
    };
    let keys_file = if config.authorized_keys_file.is_empty() {
        "\"$HOME/.ssh/authorized_keys\"".to_owned()
    } else {
        // Validated: no quotes, backslashes or newlines.
        format!("'{}'", config.authorized_keys_file)
    };
    // Rewrites the file in place (same inode, owner and mode), once per
    // key; prints whether each key was there.
    let one = |blob: &str| {
        format!(
            "k='{blob}'; \
             if [ -f \"$f\" ] && grep -qF -e \"$k\" \"$f\"; then \
               t=$(mktemp \"$f.georep.XXXXXX\") || exit 1; \
               grep -vF -e \"$k\" \"$f\" > \"$t\"; rc=$?; \
               if [ $rc -le 1 ] && cat \"$t\" > \"$f\"; then rm -f \"$t\"; echo removed; \
               else rm -f \"$t\"; exit 1; fi; \
             else echo absent; fi; "
        )
    };
    let script = format!(
        "f={keys_file}; {}",
        blobs.iter().map(|b| one(b)).collect::<String>()
    );
    let rt = runtime()?;
    rt.block_on(async {
        let conn = SshConnection::connect(
            &target,
            HostKeyPolicy::Pinned(host_key),
            &Auth::Operator(identity),
            config.timeout(),
        )
        .await?;
        let out = conn.run(&script, b"").await?;
        conn.close().await;
        let said = String::from_utf8_lossy(&out.stdout);
        let words: Vec<&str> = said.split_whitespace().collect();
        match out.status {
            Some(0)
                if words.len() == blobs.len()
                    && words.iter().all(|w| matches!(*w, "removed" | "absent")) =>
            {
                Ok(words.iter().filter(|w| **w == "removed").count())
            }
            _ => bail!(
                "the command on {target} failed (exit {:?}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }
    })
}
