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
    let session = find_session(&state, vol, slave)?;
    if monitor_alive(session.monitor_pid) {
        bail!(
            "session {vol} -> {slave} is running; stop it first with `geo-rep stop {vol} {slave}`"
        );
    }
    let config = SessionConfig::from_json(&session.config)?;
    match remove_slave_key(home, &session, &config, identity) {
        Ok(true) => println!(
            "removed the session key from {} on {}",
            keys_file_shown(&config),
            slave.host
        ),
        Ok(false) => println!(
            "the session key was not in {} on {} (already removed)",
            keys_file_shown(&config),
            slave.host
        ),
        Err(e) => eprintln!(
            "geo-rep: warning: could not remove the session key from {} on {}: {e:#}; remove the line ending in `georep:{vol}@…` there by hand",
            keys_file_shown(&config),
            slave.host
        ),
    }
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
    if let Some(meta) =
        crate::meta::MetaVolume::mounted_at(std::path::Path::new(crate::meta::DEFAULT_MOUNT))
    {
        if let Err(e) = meta
            .session(vol, slave)
            .withdraw(&super::status::node_name())
        {
            eprintln!("geo-rep: warning: this node's rows stay on the meta-volume: {e}");
        }
    }
    println!("Deleting geo-replication session between {vol} & {slave} has been successful");
    Ok(())
}

fn keys_file_shown(config: &SessionConfig) -> String {
    if config.authorized_keys_file.is_empty() {
        "~/.ssh/authorized_keys".into()
    } else {
        config.authorized_keys_file.clone()
    }
}

/// Removes the session's line from the slave's authorized_keys, connecting
/// as the operator (the session key itself can only run `geo-rep slave`).
/// True if a line was removed.
fn remove_slave_key(
    home: &Home,
    session: &SessionRecord,
    config: &SessionConfig,
    identity: Option<PathBuf>,
) -> anyhow::Result<bool> {
    let key_path = home.session_key(session.id);
    let key = russh::keys::load_secret_key(&key_path, None)
        .with_context(|| format!("reading the session key {}", key_path.display()))?;
    let public = key
        .public_key()
        .to_openssh()
        .context("encoding the session's public key")?;
    // The base64 blob: unique to this key, and free of shell metacharacters.
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
    let host_key = ssh::parse_public_key(&session.host_key).map_err(anyhow::Error::msg)?;
    let target = SshTarget {
        host: session.slave.host.clone(),
        port: config.ssh_port,
        user: session.slave.user.clone(),
    };
    let keys_file = if config.authorized_keys_file.is_empty() {
        "\"$HOME/.ssh/authorized_keys\"".to_owned()
    } else {
        // Validated: no quotes, backslashes or newlines.
        format!("'{}'", config.authorized_keys_file)
    };
    // Rewrites the file in place (same inode, owner and mode); prints
    // whether the key was there.
    let script = format!(
        "f={keys_file}; k='{blob}'; \
         if [ -f \"$f\" ] && grep -qF -e \"$k\" \"$f\"; then \
           t=$(mktemp \"$f.georep.XXXXXX\") || exit 1; \
           grep -vF -e \"$k\" \"$f\" > \"$t\"; rc=$?; \
           if [ $rc -le 1 ] && cat \"$t\" > \"$f\"; then rm -f \"$t\"; echo removed; \
           else rm -f \"$t\"; exit 1; fi; \
         else echo absent; fi"
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
        match (out.status, said.trim()) {
            (Some(0), "removed") => Ok(true),
            (Some(0), "absent") => Ok(false),
            _ => bail!(
                "the command on {target} failed (exit {:?}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }
    })
}
