//! `geo-rep create MASTERVOL SLAVE push-pem [force]`.
//!
//! Order matters for what is left behind on failure: everything that can be
//! checked is checked before the slave's authorized_keys is touched, and the
//! session is recorded only once its own key has been shown to work.

use std::path::PathBuf;

use anyhow::{bail, Context};

use super::Home;
use crate::fsutil;
use crate::session::config::SessionConfig;
use crate::session::{Brick, SlaveUrl, VolumeName};
use crate::state::NewSession;
use crate::transport::link::LinkError;
use crate::transport::ssh::{self, Auth, HostKeyPolicy, SshTarget};
use crate::transport::{self, TransportError};

pub struct CreateArgs {
    pub vol: VolumeName,
    pub slave: SlaveUrl,
    pub bricks: Vec<PathBuf>,
    pub force: bool,
    pub ssh_port: u16,
    pub identity: Option<PathBuf>,
    pub remote_command: String,
    pub authorized_keys_file: Option<String>,
    /// OpenSSH known_hosts to check the slave's key against at first contact
    /// (default `~/.ssh/known_hosts` when it exists).
    pub known_hosts: Option<PathBuf>,
    /// What the slave may arm: written into its forced command.
    pub slave_policy: crate::slave::Policy,
}

/// Shell-quotes `s` for a POSIX shell.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

pub fn create(home: &Home, args: CreateArgs) -> anyhow::Result<()> {
    let config = SessionConfig {
        ssh_port: args.ssh_port,
        remote_command: args.remote_command.clone(),
        authorized_keys_file: args.authorized_keys_file.clone().unwrap_or_default(),
        ..SessionConfig::default()
    };
    config.validate()?;
    let mut bricks = Vec::new();
    let slave_here = super::brick_check::slave_dir_here(&args.slave);
    for b in &args.bricks {
        // Checked as given (absolute), recorded by its real path.
        Brick::new(b.clone())?;
        let real = super::brick_check::resolve_brick(b, home.root(), slave_here.as_deref())?;
        if real != *b {
            println!(
                "brick {} is {}: recorded as such",
                b.display(),
                real.display()
            );
        }
        bricks.push(Brick::new(real)?);
    }
    let topology = super::discover::check_shape(&args.vol, &args.bricks)?;
    let mut state = home.state()?;
    if state.find_session(&args.vol, &args.slave)?.is_some() {
        bail!(
            "a session from {} to {} already exists",
            args.vol,
            args.slave
        );
    }
    let target = SshTarget {
        host: args.slave.host.clone(),
        port: args.ssh_port,
        user: args.slave.user.clone(),
    };
    let rt = super::lifecycle::runtime()?;
    // The policy is the slave's to decide: it goes into the forced command,
    // which the session key cannot change.
    let slave_cmd = format!(
        "{}{}",
        config.slave_command(&args.slave.volume),
        args.slave_policy.args()
    );

    // 1. Reach the slave as the operator; record its host key; check it.
    let known_hosts = args.known_hosts.clone().or_else(|| {
        let p = PathBuf::from(std::env::var_os("HOME")?).join(".ssh/known_hosts");
        p.exists().then_some(p)
    });
    let operator = Auth::Operator(args.identity.clone());
    let (conn, link) = rt
        .block_on(transport::open(
            &target,
            HostKeyPolicy::Record {
                known_hosts: known_hosts.clone(),
            },
            &operator,
            &slave_cmd,
            config.timeout(),
            1,
            None,
        ))
        .map_err(|e| explain_open_error(e, &target, &config.remote_command))?;
    let host_key = conn.host_key().clone();
    let hello = link.hello().clone();
    rt.block_on(link.close());
    if !hello.root_empty && !args.force {
        bail!(
            "slave directory {} on {} is not empty; use `force` to replicate into it anyway",
            args.slave.volume,
            args.slave.host
        );
    }
    if !hello.root_empty {
        println!(
            "warning: slave directory {} is not empty; what the bricks do not hold will be removed from it at the first sync",
            args.slave.volume
        );
    }
    println!(
        "slave {} host key {} fingerprint {}{}",
        args.slave.host,
        host_key.algorithm(),
        ssh::fingerprint(&host_key),
        match &known_hosts {
            Some(p)
                if russh::keys::check_known_hosts_path(&target.host, target.port, &host_key, p)
                    .unwrap_or(false) =>
            {
                format!(" (matches {})", p.display())
            }
            _ => " (first contact: recorded for this session)".into(),
        }
    );

    // 2. The session's key: this node's own; on a pool, every node's,
    //    published on the meta-volume by its agent.
    let host_key_line = host_key
        .to_openssh()
        .context("encoding the slave host key")?;
    let pool = super::cluster::pool(&args.vol, &args.slave)?;
    let (private, publics, def) = match &pool {
        Some(pool) => {
            let def = super::cluster::define(
                pool,
                &args.vol,
                &args.slave,
                host_key_line.clone(),
                config.to_json(),
                !hello.root_empty,
            )?;
            let keys =
                super::cluster::own_key(home, &pool.meta, &def, &pool.hosts).and_then(|private| {
                    println!(
                        "waiting for the session key of every node of {} ({})",
                        args.vol,
                        pool.hosts.join(", ")
                    );
                    Ok((private, super::cluster::await_keys(pool, &def)?))
                });
            match keys {
                Ok((private, keys)) => {
                    for k in &keys {
                        println!("session key of {} ({})", k.node, k.hosts.join(", "));
                    }
                    (
                        private,
                        keys.into_iter().map(|k| k.public).collect(),
                        Some(def),
                    )
                }
                Err(e) => {
                    let _ = pool.meta.remove_definition();
                    super::cluster::drop_pending_key(home, &def.uid);
                    return Err(e);
                }
            }
        }
        None => {
            let comment = format!("georep:{}@{}", args.vol, super::cluster::node_name());
            let (private, public) = ssh::generate_session_key(&comment)?;
            (private, vec![public], None)
        }
    };

    // 3. Record the session; install the key(s) on the slave with a
    //    forced command.
    let new = NewSession {
        master_vol: args.vol.clone(),
        slave: args.slave.clone(),
        port: args.ssh_port,
        host_key: host_key_line,
        config: config.to_json(),
        bricks,
    };
    // This node's agent waits until the session is bound to the pool's.
    let _lock = match &pool {
        Some(_) => Some(super::cluster::apply_lock(home)?),
        None => None,
    };
    let result = record(home, &mut state, &new, topology.as_ref(), &private).and_then(|record| {
        let installed = (|| -> anyhow::Result<()> {
            let lines: String = publics
                .iter()
                .map(|p| format!("command=\"{slave_cmd}\",restrict {p}\n"))
                .collect();
            let keys_file = match &args.authorized_keys_file {
                Some(f) => sh_quote(f),
                None => "\"$HOME/.ssh/authorized_keys\"".to_owned(),
            };
            let script = format!(
                "umask 077; f={keys_file}; mkdir -p \"$(dirname \"$f\")\" && cat >> \"$f\""
            );
            let out = rt.block_on(conn.run(&script, lines.as_bytes()))?;
            if out.status != Some(0) {
                bail!(
                    "installing the session key on {} failed (exit {:?}): {}",
                    args.slave.host,
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            rt.block_on(conn.close());

            // 4. Prove the session key reaches the slave, and only through
            //    the forced command.
            let (conn, link) = rt
                .block_on(transport::open(
                    &target,
                    HostKeyPolicy::Pinned(host_key.clone()),
                    &Auth::Key(home.session_key(record.id)),
                    &slave_cmd,
                    config.timeout(),
                    1,
                    None,
                ))
                .context("checking the new session key")?;
            rt.block_on(link.close());
            rt.block_on(conn.close());
            Ok(())
        })();
        match installed {
            Ok(()) => Ok(record),
            Err(e) => {
                forget(home, &state, record.id);
                Err(e)
            }
        }
    });
    let record = match result {
        Ok(r) => r,
        Err(e) => {
            if let (Some(pool), Some(def)) = (&pool, &def) {
                let _ = pool.meta.remove_definition();
                super::cluster::drop_pending_key(home, &def.uid);
            }
            return Err(e);
        }
    };
    resume_or_forget_stimes(&state, record.id, &args.vol, &args.slave, !hello.root_empty)?;
    if let (Some(pool), true) = (&pool, def.is_some()) {
        // Every node's key is on the slave: the agents set up their share.
        let def = pool.meta.update(|old| {
            let mut d = old.context("the session's definition is gone from the meta-volume")?;
            d.installed = true;
            Ok::<_, anyhow::Error>(d)
        })?;
        super::cluster::bind(
            home,
            record.id,
            &super::cluster::Binding {
                uid: def.uid.clone(),
                generation: def.generation,
            },
        )?;
        super::cluster::drop_pending_key(home, &def.uid);
        super::cluster::announce(&def);
    }
    println!(
        "Creating geo-replication session between {} & {} has been successful",
        args.vol, args.slave
    );
    Ok(())
}

/// Records a new session on this node: its rows, directory, topology,
/// replica sets and private key. Nothing is left behind on failure.
pub fn record(
    home: &Home,
    state: &mut crate::state::State,
    new: &NewSession,
    topology: Option<&crate::volume::Topology>,
    private: &str,
) -> anyhow::Result<crate::state::SessionRecord> {
    let record = state.create_session(new)?;
    let result = (|| -> anyhow::Result<()> {
        if let Some(t) = topology {
            super::discover::record_sets(state, record.id, t)?;
        }
        let dir = home.session_dir(record.id);
        fsutil::create_private_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        if let Some(t) = topology {
            let path = home.session_topology(record.id);
            t.save(&path)
                .with_context(|| format!("recording the volume topology in {}", path.display()))?;
        }
        let key_path = home.session_key(record.id);
        fsutil::write_private_file(&key_path, private.as_bytes())
            .with_context(|| format!("writing {}", key_path.display()))
    })();
    match result {
        Ok(()) => Ok(record),
        Err(e) => {
            forget(home, state, record.id);
            Err(e)
        }
    }
}

/// Undoes [`record`].
fn forget(home: &Home, state: &crate::state::State, id: crate::session::SessionId) {
    let _ = state.delete_session(id);
    let _ = std::fs::remove_dir_all(home.session_dir(id));
}

/// A session deleted without `reset-sync-time` left its stimes: into a
/// slave directory that still holds its data, start from them; into an
/// empty one, sync everything.
pub fn resume_or_forget_stimes(
    state: &crate::state::State,
    id: crate::session::SessionId,
    vol: &VolumeName,
    slave: &SlaveUrl,
    slave_had_data: bool,
) -> anyhow::Result<()> {
    if slave_had_data {
        let n = state.take_kept_stimes(id)?;
        if n > 0 {
            println!("resuming from the sync time of the earlier session for {n} brick(s)");
        }
    } else {
        state.forget_kept_stimes(vol, slave)?;
    }
    Ok(())
}

/// Adds the likely cause to a failed first contact.
fn explain_open_error(
    e: TransportError,
    target: &SshTarget,
    remote_command: &str,
) -> anyhow::Error {
    match &e {
        TransportError::Link {
            source: LinkError::Closed | LinkError::Ended(_),
            ..
        } => anyhow::anyhow!(
            "{e}: the slave command did not answer; is georep installed on {} as `{remote_command}`? (see --remote-command)",
            target.host
        ),
        TransportError::Link {
            source: LinkError::Fatal(msg),
            ..
        } => anyhow::anyhow!("slave {}: {msg}", target.host),
        _ => anyhow::Error::new(e),
    }
}
