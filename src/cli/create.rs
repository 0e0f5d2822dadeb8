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

    // 2. Record the session and make its key.
    let host_key_line = host_key
        .to_openssh()
        .context("encoding the slave host key")?;
    let record = state.create_session(&NewSession {
        master_vol: args.vol.clone(),
        slave: args.slave.clone(),
        port: args.ssh_port,
        host_key: host_key_line,
        config: config.to_json(),
        bricks,
    })?;
    let result = (|| -> anyhow::Result<()> {
        if let Some(t) = &topology {
            super::discover::record_sets(&state, record.id, t)?;
        }
        let dir = home.session_dir(record.id);
        fsutil::create_private_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        if let Some(t) = &topology {
            let path = home.session_topology(record.id);
            t.save(&path)
                .with_context(|| format!("recording the volume topology in {}", path.display()))?;
        }
        let node = hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let comment = format!("georep:{}@{}", args.vol, node);
        let (private, public) = ssh::generate_session_key(&comment)?;
        let key_path = home.session_key(record.id);
        fsutil::write_private_file(&key_path, private.as_bytes())
            .with_context(|| format!("writing {}", key_path.display()))?;

        // 3. Install it on the slave with a forced command.
        let line = format!("command=\"{slave_cmd}\",restrict {public}\n");
        let keys_file = match &args.authorized_keys_file {
            Some(f) => sh_quote(f),
            None => "\"$HOME/.ssh/authorized_keys\"".to_owned(),
        };
        let script =
            format!("umask 077; f={keys_file}; mkdir -p \"$(dirname \"$f\")\" && cat >> \"$f\"");
        let out = rt.block_on(conn.run(&script, line.as_bytes()))?;
        if out.status != Some(0) {
            bail!(
                "installing the session key on {} failed (exit {:?}): {}",
                args.slave.host,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        rt.block_on(conn.close());

        // 4. Prove the session key reaches the slave, and only through the
        //    forced command.
        let (conn, link) = rt
            .block_on(transport::open(
                &target,
                HostKeyPolicy::Pinned(host_key.clone()),
                &Auth::Key(key_path),
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
    if let Err(e) = result {
        let _ = state.delete_session(record.id);
        let _ = std::fs::remove_dir_all(home.session_dir(record.id));
        return Err(e);
    }
    // A session deleted without `reset-sync-time` left its stimes: into a
    // slave directory that still holds its data, start from them; into an
    // empty one, sync everything.
    if !hello.root_empty {
        let n = state.take_kept_stimes(record.id)?;
        if n > 0 {
            println!("resuming from the sync time of the earlier session for {n} brick(s)");
        }
    } else {
        state.forget_kept_stimes(&args.vol, &args.slave)?;
    }
    println!(
        "Creating geo-replication session between {} & {} has been successful",
        args.vol, args.slave
    );
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
