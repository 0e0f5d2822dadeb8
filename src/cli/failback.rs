//! `geo-rep failback MASTERVOL SLAVE` on the repaired master, after the DR
//! directory was promoted (`geo-rep promote`).
//!
//! Step 1, the loss window: each brick's entries changed after its last
//! committed stime never reached DR, and leveling the master with DR would
//! overwrite or remove them. They are moved aside first, with their paths,
//! into `georep-conflicts/<time>/<brick name>/` beside the brick (see
//! `dr::conflicts`), and listed. A GlusterFS volume is read and changed
//! only through a mount georep makes of it (its bricks are GlusterFS's to
//! write), and its loss window goes to `georep-conflicts/<time>/<volume>/`
//! in georep's home on this node. The `<time>` is chosen by the first run
//! and kept in the session's directory (`failback.json`), so a run killed
//! at any point and started again moves the rest into the same place and
//! lists everything moved so far.
//!
//! Step 3, `--switch` (writes at DR stopped): a last leveling, then DR is
//! demoted over the same connection (`geo-rep demote`: its journal stops,
//! the fence is lifted), `verify --quick` with nothing in flight, and the
//! session starts again with each brick's stime set to now: master and DR
//! hold the same tree, so no Hybrid Crawl resends it. Every step is
//! idempotent, so a switch cut off anywhere is run again.
//!
//! Step 2, leveling: the master connects to the DR host with the
//! operator's key and runs `geo-rep dr-ship DIR` there, which ships the DR
//! directory to the brick (or volume mount) this process serves with georep's slave code
//! (see `dr::level`): only what differs travels. Run again, it converges.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::lifecycle::monitor_alive;
use super::{find_session, Home, UsageError};
use crate::dr::promotion::PromotedDir;
use crate::dr::{conflicts, level};
use crate::meta::registry::Desired;
use crate::session::config::SessionConfig;
use crate::session::{SlaveUrl, Timestamp, VolumeName};
use crate::slave::mount::VolumeMount;
use crate::state::{BrickRecord, SessionRecord};
use crate::transport::ssh::{self, Auth, HostKeyPolicy, SshConnection, SshTarget};
use crate::volume::{is_local, Topology};

/// The subcommand DR runs for the leveling.
const SHIP_CMD: &str = "dr-ship";

/// What a failback run keeps between runs, in the session's directory.
#[derive(Debug, Serialize, Deserialize)]
struct FailbackState {
    /// The `<time>` of the conflicts directories, chosen once.
    stamp: String,
    /// Step 1 is complete: from here on the brick changes by the
    /// leveling, whose writes are no loss window.
    #[serde(default)]
    set_aside: bool,
}

impl FailbackState {
    fn path(home: &Home, id: crate::session::SessionId) -> PathBuf {
        home.session_dir(id).join("failback.json")
    }

    /// The state of the first run, or a new one with the time of now.
    fn load_or_start(home: &Home, id: crate::session::SessionId) -> anyhow::Result<Self> {
        let path = Self::path(home, id);
        match std::fs::read(&path) {
            Ok(bytes) => {
                return serde_json::from_slice(&bytes)
                    .with_context(|| format!("reading {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
        let fmt = time::macros::format_description!("[year][month][day]-[hour][minute][second]");
        let now = time::OffsetDateTime::from_unix_timestamp_nanos(Timestamp::now().nanos().into())
            .context("the clock")?;
        let state = FailbackState {
            stamp: now.format(&fmt).context("formatting the time")?,
            set_aside: false,
        };
        state.save(home, id)?;
        Ok(state)
    }

    /// The failback is over: the next one starts afresh.
    fn finish(home: &Home, id: crate::session::SessionId) -> anyhow::Result<()> {
        let path = Self::path(home, id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }

    fn save(&self, home: &Home, id: crate::session::SessionId) -> anyhow::Result<()> {
        let path = Self::path(home, id);
        crate::fsutil::write_private_file(&path, &serde_json::to_vec(self)?)
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// Waits a while for the monitor `pid` to end, if it runs.
fn wait_ended(pid: Option<u32>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(35);
    if monitor_alive(pid) {
        println!("waiting for this node's monitor to stop");
    }
    while monitor_alive(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

pub struct FailbackArgs {
    /// The operator's private key for the DR host (default ~/.ssh/id_* or
    /// the agent).
    pub identity: Option<PathBuf>,
    /// `GEOREP_HOME` on the DR host (default: its own default).
    pub dr_home: Option<PathBuf>,
    /// Switch back: final catch-up, DR demoted, verify, session resumed.
    pub switch: bool,
}

pub fn failback(
    home: &Home,
    vol: &VolumeName,
    slave: &SlaveUrl,
    args: FailbackArgs,
) -> anyhow::Result<()> {
    let state = home.state()?;
    let session = find_session(&state, vol, slave)?;
    let pool = super::cluster::find(vol, slave)?.map(|(meta, def)| (meta, def.desired));
    if pool.as_ref().is_some_and(|(_, d)| *d == Desired::Stopped) {
        // The pool is stopped: this node's agent may still be ending its
        // monitor.
        wait_ended(session.monitor_pid);
    }
    if monitor_alive(session.monitor_pid) {
        if args.switch {
            // A switch cut off after the session started has only its
            // record left to drop; one that ended has nothing left.
            let ongoing = FailbackState::path(home, session.id).exists();
            FailbackState::finish(home, session.id)?;
            if ongoing {
                println!("switched back: {vol} -> {slave} is running");
            } else {
                println!(
                    "nothing to switch: no failback in progress, and {vol} -> {slave} is running"
                );
            }
            return Ok(());
        }
        bail!(
            "session {vol} -> {slave} is running; stop it first with `geo-rep stop {vol} {slave}` (the old master must not ship over the promoted copy)"
        );
    }
    let config = SessionConfig::from_json(&session.config)?;
    if !config.exclude.is_empty() {
        return Err(UsageError(format!(
            "failback does not handle a session with `exclude` yet ({vol} -> {slave}): leveling would remove the excluded files from the master"
        ))
        .into());
    }
    let bricks = state.bricks(session.id)?;
    let volume = crate::volume::Topology::load(&home.session_topology(session.id))?;
    if let Some((meta, desired)) = &pool {
        pool_stopped(meta, *desired, vol, slave)?;
    }
    let sets_dir = pool.as_ref().map(|(meta, _)| meta.sets_dir());
    let set_stime = |set: &str| {
        sets_dir
            .as_ref()
            .and_then(|d| crate::monitor::sets::shared_set_stime(d, set))
    };
    let stime = loss_window_start(&bricks, volume.as_ref(), &set_stime, vol, slave)?;
    let mut progress = FailbackState::load_or_start(home, session.id)?;
    let target = Target::of(
        home,
        &bricks,
        volume.as_ref(),
        pool.is_some(),
        &progress.stamp,
    )?;
    let mut total = 0;
    {
        let (root, into) = (target.root(), &target.conflicts);
        let moved = if progress.set_aside {
            Vec::new()
        } else {
            conflicts::set_aside(root, stime, into, &[home.root().to_owned()])
                .with_context(|| format!("moving the loss window of {} aside", root.display()))?
        };
        let kept =
            conflicts::listed(into).with_context(|| format!("listing {}", into.display()))?;
        println!(
            "loss window of {} (changed after its last committed stime, {}): {} entr{} in {} ({} moved by this run)",
            target.name(),
            super::status::local(stime.as_timestamp()),
            kept.len(),
            if kept.len() == 1 { "y" } else { "ies" },
            into.display(),
            moved.len()
        );
        for p in &kept {
            println!(
                "  {}",
                crate::terminal::escape_controls(&p.display().to_string())
            );
        }
        total += kept.len();
    }
    if total == 0 {
        println!(
            "loss window: empty (nothing changed on the master after its last committed stime)"
        );
    }
    if !progress.set_aside {
        progress.set_aside = true;
        progress.save(home, session.id)?;
    }
    let dr = DrHost::new(&session, &config, &args)?;
    let got = dr.level(target.root())?;
    println!(
        "{} is level with {}: {got} bytes came from DR",
        target.name(),
        slave
    );
    if !args.switch {
        println!(
            "next: keep running this to catch up; to switch back, stop writes at {slave} and run `geo-rep failback {vol} {slave} --switch`"
        );
        return Ok(());
    }
    // Step 3, the switch (writes at DR stopped): the run above was the
    // final catch-up. DR serves its master again, the copy is checked
    // with nothing in flight, and the session resumes from now: both
    // sides hold the same tree, so nothing before now is owed.
    dr.demote()?;
    super::verify::verify(
        home,
        vol,
        slave,
        super::verify::VerifyArgs {
            quick: true,
            json: false,
            rate: 0,
            settled: true,
            repair: false,
        },
    )
    .context("the master is not level with DR after the final catch-up (were writes at DR stopped?); run the switch again")?;
    let now = crate::session::Stime::now();
    for b in &bricks {
        state.set_stime(b.id, now)?;
    }
    match &pool {
        None => super::lifecycle::start(home, vol, slave, false, false)?,
        Some((meta, _)) => {
            // Whichever node's member is elected continues from the
            // set's stime on the meta-volume, the latest of the nodes'.
            let node = super::status::node_name();
            let sets = bricks.iter().filter_map(|b| b.subvolume.as_deref());
            for set in sets {
                let file = crate::monitor::sets::shared_stime_file(&meta.sets_dir(), set, &node);
                crate::meta::write::rewrite(&file, now.nanos().to_string().as_bytes())
                    .with_context(|| format!("writing {}", file.display()))?;
            }
            let start = super::cluster::Lifecycle::Start { foreground: false };
            super::cluster::lifecycle(home, vol, slave, start, false)?;
        }
    }
    FailbackState::finish(home, session.id)?;
    println!(
        "switched back: {vol} -> {slave} replicates again from {}",
        super::status::local(now.as_timestamp())
    );
    Ok(())
}

/// Where each entry changed after this time may be missing at DR: the
/// session's last committed stime, the earliest of its bricks' (an
/// arbiter holds no content and commits nothing of its own), a brick of a
/// replica set counting the set's stime on the meta-volume (`shared`), as
/// a member whose node was Passive never moved its own. Earlier is safe:
/// an entry DR has too that is moved aside only comes back whole.
fn loss_window_start(
    bricks: &[BrickRecord],
    volume: Option<&Topology>,
    shared: &dyn Fn(&str) -> Option<crate::session::Stime>,
    vol: &VolumeName,
    slave: &SlaveUrl,
) -> anyhow::Result<crate::session::Stime> {
    if volume.is_none() && bricks.len() != 1 {
        return Err(UsageError(format!(
            "failback handles a session of one brick or of a GlusterFS volume ({vol} -> {slave} has {} plain directories): the DR directory holds their union",
            bricks.len()
        ))
        .into());
    }
    let mut earliest = None;
    for b in bricks.iter().filter(|b| !b.arbiter) {
        let set = b.subvolume.as_deref().and_then(shared);
        let Some(stime) = b.stime.max(set) else {
            bail!(
                "brick {} of {vol} never committed a batch to {slave}: all of it is in the loss window, and failback cannot tell what DR has; copy it aside and sync it from DR in full",
                b.brick.path().display()
            );
        };
        earliest = Some(earliest.map_or(stime, |e: crate::session::Stime| e.min(stime)));
    }
    earliest.with_context(|| format!("session {vol} -> {slave} has no brick"))
}

/// Failback of a session cluster-wide needs it stopped on every node: no
/// node's monitor may ship while the volume is leveled from DR.
fn pool_stopped(
    meta: &crate::meta::SessionMeta,
    desired: Desired,
    vol: &VolumeName,
    slave: &SlaveUrl,
) -> anyhow::Result<()> {
    if matches!(desired, Desired::Started | Desired::Paused) {
        bail!(
            "session {vol} -> {slave} is {desired} on the pool; stop it on every node first with `geo-rep stop {vol} {slave}` (the old master must not ship over the promoted copy)"
        );
    }
    let now = Timestamp::now();
    let running: Vec<String> = meta
        .reports(&super::status::node_name())?
        .into_iter()
        .filter(|r| r.live && !r.offline(now))
        .map(|r| r.node)
        .collect();
    if !running.is_empty() {
        bail!(
            "session {vol} -> {slave} still runs on {}; wait until `geo-rep status` shows it stopped there",
            running.join(", ")
        );
    }
    Ok(())
}

/// What failback brings level with DR, and where its loss window goes.
struct Target {
    root: Root,
    /// `georep-conflicts/<time>/<name>`: beside a plain brick (a rename
    /// away); for a volume in georep's home on this node, outside the
    /// volume, so that the leveling does not remove it and the resumed
    /// session does not ship it.
    conflicts: PathBuf,
    label: String,
}

impl Target {
    fn of(
        home: &Home,
        bricks: &[BrickRecord],
        volume: Option<&Topology>,
        pooled: bool,
        stamp: &str,
    ) -> anyhow::Result<Target> {
        let Some(t) = volume else {
            let brick = bricks[0].brick.path().to_owned();
            return Ok(Target {
                conflicts: conflicts::conflicts_dir(&brick, stamp),
                label: brick.display().to_string(),
                root: Root::Brick(brick),
            });
        };
        // Another node's brick is leveled through the mount as well; but
        // the loss window starts at the stimes of this node's bricks, so
        // every leg of the volume needs a member here, and the other
        // nodes' shares must be of the same cluster-wide session.
        let unseen: Vec<String> = t
            .subvolumes
            .iter()
            .filter(|v| !v.bricks.iter().any(|b| is_local(&b.host)) || !pooled)
            .flat_map(|v| v.bricks.iter().filter(|b| !is_local(&b.host)))
            .map(|b| b.to_string())
            .collect();
        if !unseen.is_empty() {
            return Err(UsageError(format!(
                "failback of volume {} needs a member of every replica set on this node and, for bricks on other nodes, a session created cluster-wide; not so for {}: run it on a node that holds a member of each set",
                t.name,
                unseen.join(", ")
            ))
            .into());
        }
        let mount = VolumeMount::acquire(home.root(), &t.name)
            .with_context(|| format!("mounting volume {} to level it with DR", t.name))?;
        Ok(Target {
            conflicts: home
                .root()
                .join(conflicts::CONFLICTS_DIR)
                .join(stamp)
                .join(&t.name),
            label: format!("volume {} (mounted at {})", t.name, mount.path().display()),
            root: Root::Volume(mount),
        })
    }

    /// The directory the loss window is taken from and DR levels.
    fn root(&self) -> &Path {
        match &self.root {
            Root::Brick(b) => b,
            Root::Volume(m) => m.path(),
        }
    }

    fn name(&self) -> &str {
        &self.label
    }
}

enum Root {
    /// A plain directory.
    Brick(PathBuf),
    /// A GlusterFS volume is changed only through a mount of its own, as
    /// its clients change it: its bricks are GlusterFS's to write.
    Volume(VolumeMount),
}

/// The DR host as the operator reaches it: the session's slave host and
/// port, its pinned host key, the operator's key.
struct DrHost<'a> {
    target: SshTarget,
    host_key: russh::keys::PublicKey,
    session: &'a SessionRecord,
    config: &'a SessionConfig,
    args: &'a FailbackArgs,
}

impl<'a> DrHost<'a> {
    fn new(
        session: &'a SessionRecord,
        config: &'a SessionConfig,
        args: &'a FailbackArgs,
    ) -> anyhow::Result<Self> {
        Ok(DrHost {
            target: SshTarget {
                host: session.slave.host.clone(),
                port: config.ssh_port,
                user: session.slave.user.clone(),
            },
            host_key: ssh::parse_public_key(&session.host_key).map_err(anyhow::Error::msg)?,
            session,
            config,
            args,
        })
    }

    /// `geo-rep [--home H] <what> 'DIR'` as the DR host runs it.
    fn command(&self, what: &str) -> String {
        let home = match &self.args.dr_home {
            Some(h) => format!(" --home '{}'", h.display()),
            None => String::new(),
        };
        format!(
            "{}{home} {what} '{}'",
            self.config.remote_command, self.session.slave.volume
        )
    }

    async fn connect(&self) -> anyhow::Result<SshConnection> {
        SshConnection::connect(
            &self.target,
            HostKeyPolicy::Pinned(self.host_key.clone()),
            &Auth::Operator(self.args.identity.clone()),
            self.config.timeout(),
        )
        .await
        .with_context(|| {
            format!(
                "connecting to the DR host {} with the operator's key",
                self.target
            )
        })
    }

    /// Ships the DR directory to `brick` (see `dr::level`); bytes received.
    fn level(&self, brick: &Path) -> anyhow::Result<u64> {
        let command = self.command(SHIP_CMD);
        // The master's own brick, from its own DR copy: set-id bits and
        // device nodes are as they were replicated.
        let policy = crate::slave::Policy {
            allow_devices: true,
            allow_setid: true,
            ..crate::slave::Policy::default()
        };
        super::lifecycle::runtime()?.block_on(async {
            let conn = self.connect().await?;
            let stream = conn
                .exec_stream(&command)
                .await
                .with_context(|| format!("running `{command}` on {}", self.target))?;
            let got = level::serve_brick(brick, policy, stream)
                .await
                .with_context(|| format!("leveling {} with {}", brick.display(), self.target))?;
            conn.close().await;
            Ok(got)
        })
    }

    /// Runs `geo-rep demote DIR` there; prints what it said.
    fn demote(&self) -> anyhow::Result<()> {
        let mut command = self.command("demote");
        if !self.config.authorized_keys_file.is_empty() {
            // Validated: no quotes, backslashes or newlines.
            command.push_str(&format!(
                " --authorized-keys-file '{}'",
                self.config.authorized_keys_file
            ));
        }
        let out = super::lifecycle::runtime()?.block_on(async {
            let conn = self.connect().await?;
            let out = conn.run(&command, b"").await?;
            conn.close().await;
            anyhow::Ok(out)
        })?;
        if out.status != Some(0) {
            bail!(
                "`{command}` on {} failed (exit {:?}): {}",
                self.target,
                out.status,
                crate::terminal::escape_controls(String::from_utf8_lossy(&out.stderr).trim())
            );
        }
        print!(
            "{}",
            crate::terminal::escape_controls(&String::from_utf8_lossy(&out.stdout))
        );
        Ok(())
    }
}

/// `geo-rep dr-ship DIR` on the DR host, run by failback through the
/// operator's SSH connection: ships DIR over stdin and stdout.
pub fn dr_ship(home: &Home, dir: &Path) -> anyhow::Result<()> {
    let dir = std::fs::canonicalize(dir).with_context(|| format!("{}", dir.display()))?;
    // The changes journalled since `promote` on this host, if it was.
    let place = PromotedDir::of(home.root(), &dir);
    let journal = place.journal_dir();
    let journal = journal.is_dir().then_some(journal);
    if journal.is_some() && !super::promote::roll_journal(&place) {
        eprintln!("the DR journal did not close its current file: its latest changes travel through the walk");
    }
    let rt = super::lifecycle::runtime()?;
    let totals = rt.block_on(async {
        let stream = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
        level::ship_tree(&dir, journal.as_deref(), stream, Duration::from_secs(120)).await
    });
    // Its stdin reader may sit in a read the master never answers: the
    // runtime must not wait for it.
    rt.shutdown_background();
    let totals = totals?;
    eprintln!(
        "shipped {} to the master: {} files, {} bytes",
        dir.display(),
        totals.files,
        totals.bytes
    );
    Ok(())
}
