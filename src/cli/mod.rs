//! The `geo-rep` command: parsing, then one function per subcommand.
//!
//! Exit status: 0 success, 1 the operation failed, 2 the command line is
//! wrong. Errors are printed by the binary as `geo-rep: <what>: <cause>`.
//!
//! On top: may import every room; nothing but `src/bin/` imports it
//! (`tests/layout.rs` checks).

mod agent;
mod brick_check;
mod cluster;
mod configure;
mod create;
mod delete;
mod discover;
mod failback;
mod lifecycle;
pub mod logging;
mod promote;
mod repair;
mod status;
mod verify;
mod verify_legs;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

pub use crate::session::Home;

use crate::session::{SlaveUrl, VolumeName};
use crate::state::{SessionRecord, State};

/// A command line that parsed but makes no sense: exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[derive(Debug, Parser)]
#[command(
    name = "geo-rep",
    version,
    about = "Asynchronous geo-replication of directories over SSH"
)]
pub struct Cli {
    /// State directory (database, keys, journals, logs).
    #[arg(
        long,
        global = true,
        env = "GEOREP_HOME",
        default_value = "/var/lib/georep"
    )]
    pub home: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a session: MASTERVOL [USER@]HOST::SLAVEDIR push-pem [force]
    Create {
        master_vol: String,
        slave: String,
        /// `push-pem` (required) and optionally `force` (slave dir may be non-empty).
        #[arg(num_args = 1..=2)]
        words: Vec<String>,
        /// A master brick directory (repeat for several). Without it, the
        /// local bricks of MASTERVOL from `gluster volume info`.
        #[arg(long = "brick")]
        bricks: Vec<PathBuf>,
        #[arg(long, default_value_t = 22)]
        ssh_port: u16,
        /// The operator's private key for the first connection (default: ~/.ssh/id_* or ssh-agent).
        #[arg(long)]
        identity: Option<PathBuf>,
        /// How to run georep on the slave.
        #[arg(long, default_value = "geo-rep")]
        remote_command: String,
        /// authorized_keys file on the slave (default ~/.ssh/authorized_keys of the slave user).
        #[arg(long)]
        authorized_keys_file: Option<String>,
        /// known_hosts file to check the slave's host key against (default ~/.ssh/known_hosts if present).
        #[arg(long)]
        known_hosts: Option<PathBuf>,
        /// The slave policy written into the forced command (see README,
        /// "The slave's policy").
        #[command(flatten)]
        slave_policy: crate::slave::Policy,
    },
    /// Start replicating (runs a background monitor).
    Start {
        master_vol: String,
        slave: String,
        /// `force`: start even if it seems to be running.
        #[arg(num_args = 0..=1)]
        words: Vec<String>,
        /// Run the monitor in the foreground (for systemd).
        #[arg(long)]
        foreground: bool,
    },
    /// Stop replicating.
    Stop {
        master_vol: String,
        slave: String,
        #[arg(num_args = 0..=1)]
        words: Vec<String>,
    },
    /// Show sessions: [MASTERVOL [SLAVE]] [detail]
    Status {
        #[arg(num_args = 0..=3)]
        words: Vec<String>,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Pause shipping; the journal keeps recording: MASTERVOL SLAVE [force]
    Pause {
        master_vol: String,
        slave: String,
        #[arg(num_args = 0..=1)]
        words: Vec<String>,
    },
    /// Resume a paused session: MASTERVOL SLAVE [force]
    Resume {
        master_vol: String,
        slave: String,
        #[arg(num_args = 0..=1)]
        words: Vec<String>,
    },
    /// Delete a stopped session: MASTERVOL SLAVE [reset-sync-time]
    Delete {
        master_vol: String,
        slave: String,
        /// `reset-sync-time`: a session re-created later starts from nothing.
        #[arg(num_args = 0..=1)]
        words: Vec<String>,
        /// The operator's private key, to remove the session key from the
        /// slave's authorized_keys (default: ~/.ssh/id_* or ssh-agent).
        #[arg(long)]
        identity: Option<PathBuf>,
    },
    /// Show or change settings: MASTERVOL SLAVE [KEY [VALUE]] or '!KEY' to reset
    Config {
        master_vol: String,
        slave: String,
        #[arg(num_args = 0..=2, allow_hyphen_values = true)]
        words: Vec<String>,
        /// Set every `key = value` of FILE (see config/georep.conf); all or nothing.
        #[arg(long, value_name = "FILE", conflicts_with = "words")]
        load: Option<PathBuf>,
    },
    /// Checkpoints: `checkpoint wait MASTERVOL SLAVE [--timeout SECS]`
    Checkpoint {
        #[command(subcommand)]
        action: CheckpointAction,
    },
    /// Compare the master with the slave: MASTERVOL SLAVE; exit 0 when
    /// equal, 1 when anything differs (see README, "Verify").
    Verify {
        master_vol: String,
        slave: String,
        /// Compare metadata only, not contents.
        #[arg(long)]
        quick: bool,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
        /// Hash at most this many bytes a second on each side (0: unpaced).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Resend what differs (the session stopped or paused), then
        /// compare again.
        #[arg(long)]
        repair: bool,
    },
    /// Serve the slave side on stdin/stdout (run by sshd).
    Slave {
        /// The slave directory.
        #[arg(long, required_unless_present = "volume", conflicts_with = "volume")]
        root: Option<PathBuf>,
        /// A started GlusterFS volume on this host, mounted by the slave
        /// itself under `--home`.
        #[arg(long)]
        volume: Option<String>,
        /// What this slave agrees to arm on its host (see README, "The
        /// slave's policy").
        #[command(flatten)]
        policy: crate::slave::Policy,
    },
    /// On the DR host, the primary being lost: make the slave directory
    /// DIR the primary (fence the old master, record the promotion point,
    /// journal every change made here from now on).
    Promote {
        /// The slave directory, as the session names it.
        dir: String,
        /// The slave user's authorized_keys holding the session's key line
        /// (default ~/.ssh/authorized_keys).
        #[arg(long)]
        authorized_keys_file: Option<PathBuf>,
    },
    /// On the repaired master, after `promote` on the DR host: move the
    /// loss window (what changed after the last committed stime) aside
    /// into georep-conflicts/ beside each brick, list it, then bring the
    /// brick level with DR, shipping only what differs.
    Failback {
        master_vol: String,
        slave: String,
        /// The operator's private key for the DR host (default:
        /// ~/.ssh/id_* or ssh-agent).
        #[arg(long)]
        identity: Option<PathBuf>,
        /// GEOREP_HOME on the DR host, where `promote` journalled the
        /// changes made there (default: the DR host's own default).
        #[arg(long)]
        dr_home: Option<PathBuf>,
        /// Switch back (writes at DR stopped): final catch-up, DR demoted,
        /// `verify --quick`, the session resumed without a full resync.
        #[arg(long)]
        switch: bool,
    },
    /// Ship a promoted directory to the master (run by `failback`).
    #[command(hide = true)]
    DrShip { dir: PathBuf },
    /// On the DR host: undo `promote` (stop the journal, lift the fence,
    /// drop the mark); `failback --switch` runs it.
    Demote {
        /// The slave directory, as the session names it.
        dir: String,
        /// The slave user's authorized_keys (default ~/.ssh/authorized_keys).
        #[arg(long)]
        authorized_keys_file: Option<PathBuf>,
    },
    /// Run this node's share of every cluster-wide session (those created
    /// on a node with the meta-volume mounted): as a service on every
    /// master node (see README, "Several master nodes").
    Agent,
    /// Run a session's monitor (started by `start`).
    #[command(hide = true)]
    Monitor { master_vol: String, slave: String },
    /// Journal a promoted directory (started by `promote`).
    #[command(hide = true)]
    DrJournal { dir: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum CheckpointAction {
    /// Wait until the checkpoint set with `config … checkpoint now` is
    /// completed (exit 0), or fail with a one-line reason (exit 1).
    Wait {
        master_vol: String,
        slave: String,
        /// Give up after this many seconds (default: wait as long as it takes).
        #[arg(long)]
        timeout: Option<u64>,
        /// Give up once a brick has been Faulty this many seconds.
        #[arg(long, default_value_t = 60)]
        faulty_grace: u64,
    },
}

/// Keywords after the positional arguments (`push-pem`, `force`, `detail`).
fn keywords(words: &[String], allowed: &[&str]) -> Result<Vec<String>, UsageError> {
    for w in words {
        if !allowed.contains(&w.as_str()) {
            return Err(UsageError(format!(
                "unexpected argument {w:?} (expected one of: {})",
                allowed.join(", ")
            )));
        }
    }
    Ok(words.to_vec())
}

/// The session names of a lifecycle command and whether its one optional
/// keyword (`force`, `reset-sync-time`) was given.
fn names_and_flag(
    vol: &str,
    slave: &str,
    words: &[String],
    flag: &str,
) -> Result<(VolumeName, SlaveUrl, bool), UsageError> {
    let (vol, slave) = parse_names(vol, slave)?;
    let given = !keywords(words, &[flag])?.is_empty();
    Ok((vol, slave, given))
}

fn parse_names(vol: &str, slave: &str) -> Result<(VolumeName, SlaveUrl), UsageError> {
    let vol = vol.parse().map_err(|e| UsageError(format!("{e}")))?;
    let slave = slave.parse().map_err(|e| UsageError(format!("{e}")))?;
    Ok((vol, slave))
}

/// The stored session for `vol` → `slave`, or a clear error.
fn find_session(
    state: &State,
    vol: &VolumeName,
    slave: &SlaveUrl,
) -> anyhow::Result<SessionRecord> {
    state.find_session(vol, slave)?.with_context(|| {
        format!("no session from {vol} to {slave}; create it first with `geo-rep create {vol} {slave} push-pem --brick DIR`")
    })
}

impl Cli {
    /// Whether this command runs a monitor, which logs to its session's
    /// file ([`logging::init_session`]) rather than to stderr only.
    pub fn runs_monitor(&self) -> bool {
        matches!(
            self.command,
            Command::Monitor { .. }
                | Command::Start {
                    foreground: true,
                    ..
                }
        )
    }
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let home = Home::new(cli.home);
    // The slave applies the master's modes itself; everything else here
    // writes into the home, which stays private.
    if !matches!(cli.command, Command::Slave { .. }) {
        crate::fsutil::private_umask();
    }
    match cli.command {
        Command::Create {
            master_vol,
            slave,
            words,
            bricks,
            ssh_port,
            identity,
            remote_command,
            authorized_keys_file,
            known_hosts,
            slave_policy,
        } => {
            let (vol, slave) = parse_names(&master_vol, &slave)?;
            let words = keywords(&words, &["push-pem", "force"])?;
            if !words.iter().any(|w| w == "push-pem") {
                return Err(UsageError(
                    "create needs `push-pem` (the only key distribution method)".into(),
                )
                .into());
            }
            let bricks = if !bricks.is_empty() {
                bricks
            } else if discover::gluster_present() {
                let found = discover::local_bricks(&vol)?;
                for b in &found {
                    println!("brick {} (from gluster volume info {vol})", b.display());
                }
                found
            } else {
                return Err(UsageError(format!(
                    "create needs --brick DIR (no `gluster` CLI here to find the bricks of {vol})"
                ))
                .into());
            };
            create::create(
                &home,
                create::CreateArgs {
                    vol,
                    slave,
                    bricks,
                    force: words.iter().any(|w| w == "force"),
                    ssh_port,
                    identity,
                    remote_command,
                    authorized_keys_file,
                    known_hosts,
                    slave_policy,
                },
            )
        }
        Command::Start {
            master_vol,
            slave,
            words,
            foreground,
        } => {
            let (vol, slave, force) = names_and_flag(&master_vol, &slave, &words, "force")?;
            if cluster::lifecycle(
                &home,
                &vol,
                &slave,
                cluster::Lifecycle::Start { foreground },
                force,
            )? {
                return Ok(());
            }
            lifecycle::start(&home, &vol, &slave, force, foreground)
        }
        Command::Stop {
            master_vol,
            slave,
            words,
        } => {
            let (vol, slave, force) = names_and_flag(&master_vol, &slave, &words, "force")?;
            if cluster::lifecycle(&home, &vol, &slave, cluster::Lifecycle::Stop, force)? {
                return Ok(());
            }
            lifecycle::stop(&home, &vol, &slave, force)
        }
        Command::Status { words, json } => {
            let detail = words.last().is_some_and(|w| w == "detail");
            let names: Vec<&String> = words.iter().filter(|w| *w != "detail").collect();
            let vol = names
                .first()
                .map(|v| v.parse::<VolumeName>())
                .transpose()
                .map_err(|e| UsageError(e.to_string()))?;
            let slave = names
                .get(1)
                .map(|s| s.parse::<SlaveUrl>())
                .transpose()
                .map_err(|e| UsageError(e.to_string()))?;
            if names.len() > 2 {
                return Err(
                    UsageError("status takes at most MASTERVOL SLAVE [detail]".into()).into(),
                );
            }
            status::status(&home, vol.as_ref(), slave.as_ref(), detail, json)
        }
        Command::Pause {
            master_vol,
            slave,
            words,
        } => {
            let (vol, slave, force) = names_and_flag(&master_vol, &slave, &words, "force")?;
            if cluster::lifecycle(&home, &vol, &slave, cluster::Lifecycle::Pause, force)? {
                return Ok(());
            }
            lifecycle::pause(&home, &vol, &slave, force)
        }
        Command::Resume {
            master_vol,
            slave,
            words,
        } => {
            let (vol, slave, force) = names_and_flag(&master_vol, &slave, &words, "force")?;
            if cluster::lifecycle(&home, &vol, &slave, cluster::Lifecycle::Resume, force)? {
                return Ok(());
            }
            lifecycle::resume(&home, &vol, &slave, force)
        }
        Command::Delete {
            master_vol,
            slave,
            words,
            identity,
        } => {
            let (vol, slave, reset) =
                names_and_flag(&master_vol, &slave, &words, "reset-sync-time")?;
            delete::delete(&home, &vol, &slave, reset, identity)
        }
        Command::Config {
            master_vol,
            slave,
            words,
            load,
        } => {
            let (vol, slave) = parse_names(&master_vol, &slave)?;
            let op = match load {
                Some(file) => configure::ConfigOp::Load(file),
                None => configure::ConfigOp::from_words(&words),
            };
            let changes = op.changes();
            configure::config(&home, &vol, &slave, op)?;
            if changes {
                cluster::share_config(&home, &vol, &slave)?;
            }
            Ok(())
        }
        Command::Checkpoint {
            action:
                CheckpointAction::Wait {
                    master_vol,
                    slave,
                    timeout,
                    faulty_grace,
                },
        } => {
            let (vol, slave) = parse_names(&master_vol, &slave)?;
            configure::wait(
                &home,
                &vol,
                &slave,
                timeout.map(std::time::Duration::from_secs),
                std::time::Duration::from_secs(faulty_grace),
            )
        }
        Command::Verify {
            master_vol,
            slave,
            quick,
            json,
            rate,
            repair,
        } => {
            let (vol, slave) = parse_names(&master_vol, &slave)?;
            verify::verify(
                &home,
                &vol,
                &slave,
                verify::VerifyArgs {
                    quick,
                    json,
                    rate,
                    settled: false,
                    repair,
                },
            )
        }
        Command::Slave {
            root,
            volume,
            policy,
        } => {
            crate::fsutil::raise_nofile_limit();
            let stdout = std::io::stdout().lock();
            match (root, volume) {
                (Some(root), _) => {
                    crate::slave::serve_with(&root, policy, std::io::stdin(), stdout)
                        .with_context(|| format!("slave at {}", root.display()))
                }
                (None, Some(vol)) => {
                    match crate::slave::mount::VolumeMount::acquire(home.root(), &vol) {
                        Ok(mount) => {
                            crate::slave::serve_with(mount.path(), policy, std::io::stdin(), stdout)
                                .with_context(|| format!("slave of GlusterFS volume {vol}"))
                        }
                        Err(e) => {
                            let why = e.to_string();
                            let _ = crate::slave::mount::refuse(std::io::stdin(), stdout, &why);
                            Err(anyhow::Error::new(e))
                        }
                    }
                }
                (None, None) => {
                    Err(UsageError("slave needs --root DIR or --volume VOL".into()).into())
                }
            }
        }
        Command::Promote {
            dir,
            authorized_keys_file,
        } => promote::promote(
            &home,
            promote::PromoteArgs {
                dir,
                authorized_keys_file,
            },
        ),
        Command::Failback {
            master_vol,
            slave,
            identity,
            dr_home,
            switch,
        } => {
            let (vol, slave) = parse_names(&master_vol, &slave)?;
            failback::failback(
                &home,
                &vol,
                &slave,
                failback::FailbackArgs {
                    identity,
                    dr_home,
                    switch,
                },
            )
        }
        Command::DrShip { dir } => failback::dr_ship(&home, &dir),
        Command::Demote {
            dir,
            authorized_keys_file,
        } => promote::demote(
            &home,
            promote::DemoteArgs {
                dir,
                authorized_keys_file,
            },
        ),
        Command::DrJournal { dir } => promote::journal(&home, &dir),
        Command::Agent => agent::agent(&home),
        Command::Monitor { master_vol, slave } => {
            // One journal and a few files per brick, and a worker per brick.
            crate::fsutil::raise_nofile_limit();
            let (vol, slave) = parse_names(&master_vol, &slave)?;
            lifecycle::monitor(&home, &vol, &slave)
        }
    }
}
