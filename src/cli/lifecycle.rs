//! `start`, `stop` and the monitor process they manage.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rustix::process::{Pid, Signal};

use super::config::SessionConfig;
use super::{find_session, Home};
use crate::crawl::journal::journal_dir;
use crate::monitor::{BrickPlan, SessionPlan};
use crate::session::{SlaveUrl, VolumeName};
use crate::state::{CrawlStatus, SessionRecord, SessionState, WorkerStatus};
use crate::transport::ssh::{self, Auth, SshTarget};

/// The runtime for commands that talk to a slave. Multi-threaded because
/// shipping reads files with `block_in_place`.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Whether `pid` is a live georep monitor (not a recycled pid).
pub fn monitor_alive(pid: Option<u32>) -> bool {
    let Some(pid) = pid else { return false };
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => {
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            args.contains(&&b"monitor"[..])
                && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| {
                        !s.rsplit(')')
                            .next()
                            .unwrap_or("")
                            .trim_start()
                            .starts_with('Z')
                    })
                    .unwrap_or(false)
        }
        Err(_) => false,
    }
}

/// Resolves a stored session into what the monitor runs.
fn plan(home: &Home, session: &SessionRecord) -> anyhow::Result<SessionPlan> {
    let config = SessionConfig::from_json(&session.config)?;
    let host_key = ssh::parse_public_key(&session.host_key).map_err(anyhow::Error::msg)?;
    let state = home.state()?;
    let dir = home.session_dir(session.id);
    let home_abs = std::path::absolute(home.root()).unwrap_or_else(|_| home.root().to_owned());
    let bricks = state
        .bricks(session.id)?
        .into_iter()
        .map(|b| BrickPlan {
            brick_id: b.id,
            brick: b.brick.path().to_owned(),
            journal_dir: journal_dir(&dir, b.id),
            exclude: if home_abs.starts_with(b.brick.path()) {
                vec![home_abs.clone()]
            } else {
                Vec::new()
            },
        })
        .collect();
    Ok(SessionPlan {
        session_id: session.id,
        state_home: home.root().to_owned(),
        target: SshTarget {
            host: session.slave.host.clone(),
            port: config.ssh_port,
            user: session.slave.user.clone(),
        },
        host_key,
        auth: Auth::Key(home.session_key(session.id)),
        slave_command: config.slave_command(&session.slave.volume),
        config,
        bricks,
    })
}

pub fn start(
    home: &Home,
    vol: &VolumeName,
    slave: &SlaveUrl,
    force: bool,
    foreground: bool,
) -> anyhow::Result<()> {
    let state = home.state()?;
    let session = find_session(&state, vol, slave)?;
    if monitor_alive(session.monitor_pid) {
        if !force {
            bail!(
                "session {vol} -> {slave} is already started (monitor pid {})",
                session.monitor_pid.unwrap_or(0)
            );
        }
        return Ok(());
    }
    let plan = plan(home, &session)?;
    for b in &plan.bricks {
        let md =
            std::fs::metadata(&b.brick).with_context(|| format!("brick {}", b.brick.display()))?;
        if !md.is_dir() {
            bail!("brick {}: not a directory", b.brick.display());
        }
    }
    // Pre-flight: a changed host key or an unreachable slave is reported
    // here, to the operator, not only in a log.
    // `force` (as in GlusterFS) starts anyway: the workers keep retrying
    // with back-off and show Faulty until the slave answers.
    let rt = runtime()?;
    let checked = rt
        .block_on(async {
            let (conn, link) = plan.connect().await?;
            link.close().await;
            conn.close().await;
            Ok::<_, crate::transport::TransportError>(())
        })
        .with_context(|| format!("cannot start {vol} -> {slave}"));
    drop(rt);
    match checked {
        Ok(()) => {}
        Err(e) if force => eprintln!("geo-rep: warning: {e:#}; starting anyway (force)"),
        Err(e) => return Err(e),
    }
    if foreground {
        state.set_session_state(session.id, SessionState::Started, Some(std::process::id()))?;
        return run_monitor(home, &session);
    }
    let log_path = home.monitor_log(session.id);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening log {}", log_path.display()))?;
    let exe = std::env::current_exe().context("locating the geo-rep executable")?;
    let child = Command::new(exe)
        .arg("--home")
        .arg(home.root())
        .args(["monitor", vol.as_str(), &slave.to_string()])
        .env("GEOREP_LOG", &plan.config.log_level)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a Ctrl-C at the operator's terminal must
        // not stop replication.
        .process_group(0)
        .spawn()
        .context("launching the monitor")?;
    state.set_session_state(session.id, SessionState::Started, Some(child.id()))?;
    println!("Starting geo-replication session between {vol} & {slave} has been successful");
    Ok(())
}

pub fn stop(home: &Home, vol: &VolumeName, slave: &SlaveUrl, force: bool) -> anyhow::Result<()> {
    let state = home.state()?;
    let session = find_session(&state, vol, slave)?;
    let alive = monitor_alive(session.monitor_pid);
    let started = matches!(session.state, SessionState::Started | SessionState::Paused);
    if !alive && !started && !force {
        bail!("session {vol} -> {slave} is not running");
    }
    if let (true, Some(pid)) = (alive, session.monitor_pid) {
        let pid = Pid::from_raw(pid as i32).context("invalid monitor pid")?;
        let _ = rustix::process::kill_process(pid, Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(if force { 5 } else { 30 });
        while monitor_alive(session.monitor_pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if monitor_alive(session.monitor_pid) {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
        }
    }
    state.set_session_state(session.id, SessionState::Stopped, None)?;
    for b in state.bricks(session.id)? {
        state.set_worker(b.id, WorkerStatus::Stopped, CrawlStatus::NotApplicable)?;
    }
    println!("Stopping geo-replication session between {vol} & {slave} has been successful");
    Ok(())
}

/// `pause`: the workers stop shipping after the batch in flight; the
/// journal hooks keep recording, so `resume` ships everything, from stime.
pub fn pause(home: &Home, vol: &VolumeName, slave: &SlaveUrl, force: bool) -> anyhow::Result<()> {
    let state = home.state()?;
    let session = find_session(&state, vol, slave)?;
    match session.state {
        SessionState::Paused if force => {}
        SessionState::Paused => bail!("session {vol} -> {slave} is already paused"),
        SessionState::Started if monitor_alive(session.monitor_pid) || force => {}
        _ => bail!("session {vol} -> {slave} is not started; only a running session can be paused"),
    }
    state.set_session_state(session.id, SessionState::Paused, session.monitor_pid)?;
    println!("Pausing geo-replication session between {vol} & {slave} has been successful");
    Ok(())
}

/// `resume`: the workers ship again what the journal recorded meanwhile.
pub fn resume(home: &Home, vol: &VolumeName, slave: &SlaveUrl, force: bool) -> anyhow::Result<()> {
    let state = home.state()?;
    let session = find_session(&state, vol, slave)?;
    match session.state {
        SessionState::Paused => {}
        SessionState::Started if force => {}
        _ => bail!("session {vol} -> {slave} is not paused"),
    }
    state.set_session_state(session.id, SessionState::Started, session.monitor_pid)?;
    if !monitor_alive(session.monitor_pid) {
        eprintln!("geo-rep: warning: the monitor of {vol} -> {slave} is not running; run `geo-rep start {vol} {slave} force`");
    }
    println!("Resuming geo-replication session between {vol} & {slave} has been successful");
    Ok(())
}

/// The hidden `monitor` subcommand: runs until SIGTERM/SIGINT.
pub fn monitor(home: &Home, vol: &VolumeName, slave: &SlaveUrl) -> anyhow::Result<()> {
    let state = home.state()?;
    let session = find_session(&state, vol, slave)?;
    run_monitor(home, &session)
}

fn run_monitor(home: &Home, session: &SessionRecord) -> anyhow::Result<()> {
    let plan = plan(home, session)?;
    let rt = runtime()?;
    tracing::info!(session = %format!("{} -> {}", session.master_vol, session.slave), "monitor starting");
    rt.block_on(async {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("monitor stopping");
            let _ = tx.send(true);
        });
        crate::monitor::run(plan, rx).await
    })?;
    Ok(())
}
