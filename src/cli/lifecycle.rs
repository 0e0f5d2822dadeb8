//! `start`, `stop` and the monitor process they manage.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rustix::process::{Pid, Signal};

use super::logging;
use super::{find_session, Home};
use crate::monitor::plan;
use crate::session::config::{Applies, LogFormat, SessionConfig};
use crate::session::{SessionId, SlaveUrl, VolumeName};
use crate::state::{CrawlStatus, SessionRecord, SessionState, WorkerStatus};

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
    running_with_arg(pid, b"monitor")
}

/// Whether `pid` is a live process (not a zombie) with `arg` among its
/// arguments: a georep process of that kind, not a recycled pid.
pub fn running_with_arg(pid: Option<u32>, arg: &[u8]) -> bool {
    let Some(pid) = pid else { return false };
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => {
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            args.contains(&arg)
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
    super::discover::follow_changes(home, session.id)
        .with_context(|| format!("cannot start {vol} -> {slave}"))?;
    let bricks: Vec<_> = state
        .bricks(session.id)?
        .into_iter()
        .map(|b| b.brick.path().to_owned())
        .collect();
    let slave_here = super::brick_check::slave_dir_here(&session.slave);
    for b in &bricks {
        super::brick_check::recheck_brick(b, home.root(), slave_here.as_deref())?;
    }
    let topology = super::discover::check_shape(vol, &bricks)
        .with_context(|| format!("cannot start {vol} -> {slave}"))?;
    // The sets as they are now: the plan elects one Active worker per set.
    if let Some(t) = &topology {
        super::discover::record_sets(&state, session.id, t)?;
    }
    let plan = plan(home, &session)?;
    // Pre-flight: a changed host key or an unreachable slave is reported
    // here, to the operator, not only in a log.
    // `force` (as in GlusterFS) starts anyway: the workers keep retrying
    // with back-off and show Faulty until the slave answers.
    let preflight = || -> anyhow::Result<()> {
        let checked = runtime()?
            .block_on(async {
                let (conn, link) = plan.connect_streams(1).await?;
                link.close().await;
                conn.close().await;
                Ok::<_, crate::transport::TransportError>(())
            })
            .with_context(|| format!("cannot start {vol} -> {slave}"));
        match checked {
            Err(e) if force => {
                let e = format!("{e:#}");
                let e = crate::terminal::escape_controls(&e);
                eprintln!("geo-rep: warning: {e}; starting anyway (force)");
                Ok(())
            }
            other => other,
        }
    };
    if foreground {
        preflight()?;
        state.set_session_state(session.id, SessionState::Started, Some(std::process::id()))?;
        return run_monitor(home, &session, true);
    }
    // The monitor logs to its session file itself; its stderr only catches
    // what bypasses the logger (a panic).
    let log_path = home.session_stderr(&session);
    if let Some(dir) = log_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
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
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a Ctrl-C at the operator's terminal must
        // not stop replication.
        .process_group(0)
        .spawn()
        .context("launching the monitor")?;
    state.set_session_state(session.id, SessionState::Started, Some(child.id()))?;
    // The pre-flight runs while the monitor makes its own connection: a
    // session costs its start-up (an SSH handshake and a remote login, a
    // few round trips on a WAN) once, not twice. A monitor whose slave
    // fails the pre-flight is stopped again before it could ship anything.
    if let Err(e) = preflight() {
        end_monitor(Some(child.id()), Duration::from_secs(5));
        // As it was: a session never started still shows Created.
        let (to, workers) = if session.state == SessionState::Created {
            (SessionState::Created, WorkerStatus::Created)
        } else {
            (SessionState::Stopped, WorkerStatus::Stopped)
        };
        mark(&state, &session, to, workers)?;
        return Err(e);
    }
    println!("Starting geo-replication session between {vol} & {slave} has been successful");
    Ok(())
}

/// A session without a monitor, and its bricks.
fn mark(
    state: &crate::state::State,
    session: &SessionRecord,
    to: SessionState,
    workers: WorkerStatus,
) -> anyhow::Result<()> {
    state.set_session_state(session.id, to, None)?;
    for b in state.bricks(session.id)? {
        state.set_worker(b.id, workers, CrawlStatus::NotApplicable)?;
    }
    Ok(())
}

/// Sends the monitor `pid` SIGTERM, waits up to `grace` for it to finish
/// its batch and exit, then kills it.
fn end_monitor(pid: Option<u32>, grace: Duration) {
    let Some(raw) = pid.filter(|_| monitor_alive(pid)) else {
        return;
    };
    let Some(p) = Pid::from_raw(raw as i32) else {
        return;
    };
    let _ = rustix::process::kill_process(p, Signal::TERM);
    let deadline = Instant::now() + grace;
    while monitor_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if monitor_alive(pid) {
        let _ = rustix::process::kill_process(p, Signal::KILL);
    }
}

pub fn stop(home: &Home, vol: &VolumeName, slave: &SlaveUrl, force: bool) -> anyhow::Result<()> {
    let state = home.state()?;
    let session = find_session(&state, vol, slave)?;
    let alive = monitor_alive(session.monitor_pid);
    let started = matches!(session.state, SessionState::Started | SessionState::Paused);
    if !alive && !started && !force {
        bail!("session {vol} -> {slave} is not running");
    }
    if alive {
        end_monitor(
            session.monitor_pid,
            Duration::from_secs(if force { 5 } else { 30 }),
        );
    }
    mark(
        &state,
        &session,
        SessionState::Stopped,
        WorkerStatus::Stopped,
    )?;
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
    run_monitor(home, &session, false)
}

/// Runs the monitor in this process until SIGTERM or SIGINT; SIGHUP
/// reloads the settings. `foreground` (`start --foreground`): log lines go
/// to stderr too, and on a terminal a progress bar shows a Hybrid Crawl.
fn run_monitor(home: &Home, session: &SessionRecord, foreground: bool) -> anyhow::Result<()> {
    let plan = plan(home, session)?;
    let bars = (foreground && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .then(indicatif::MultiProgress::new);
    let log_file = home.session_log(session);
    let log = logging::init_session(logging::SessionLog {
        file: &log_file,
        max_bytes: plan.config.log_rotate_bytes(),
        keep: plan.config.log_rotate_keep,
        json: plan.config.log_format == LogFormat::Json,
        level: plan.config.log_level.as_str(),
        stderr: foreground.then(|| logging::Stderr(bars.clone())),
    })?;
    let rt = runtime()?;
    tracing::info!(
        session = %format!("{} -> {}", session.master_vol, session.slave),
        pid = std::process::id(),
        "monitor starting"
    );
    let home_for_report = home.clone();
    let home = home.clone();
    let id = session.id;
    rt.block_on(async {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let running = plan.config.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
                signal(SignalKind::hangup()),
            ) else {
                tracing::error!("cannot install signal handlers; stop with SIGKILL");
                return;
            };
            let mut running = running;
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = hup.recv() => reload(&home, id, &mut running, &log),
                }
            }
            tracing::info!("monitor stopping");
            let _ = tx.send(true);
        });
        if let Some(bars) = bars {
            tokio::spawn(progress_bars(
                bars,
                plan.state_home.clone(),
                plan.session_id,
                rx.clone(),
            ));
        }
        let meta = plan.meta.clone();
        if let Some(meta) = meta.clone() {
            tokio::spawn(report(home_for_report.clone(), id, meta, rx.clone()));
        }
        let ran = crate::monitor::run(plan, rx).await;
        if let Some(meta) = meta {
            // The last word of this monitor: its rows as they stand, kept
            // as they are by the other nodes (not a live report).
            let (home, meta) = (home_for_report.clone(), meta.clone());
            let said = tokio::task::spawn_blocking(move || {
                super::status::publish(&home, id, &meta, false)
            })
            .await;
            if let Ok(Err(e)) = said {
                tracing::warn!("reporting this node's rows to the meta-volume: {e:#}");
            }
        }
        ran
    })?;
    // Only read-only questions to the gluster CLI can still be running:
    // the monitor ends now rather than when they return.
    rt.shutdown_background();
    Ok(())
}

/// Rewrites this node's status rows on the meta-volume every
/// [`crate::meta::PUBLISH_EVERY`] until `shutdown`, so `status` on any
/// node shows them, and shows them `Offline` once they stop coming.
async fn report(
    home: Home,
    id: SessionId,
    meta: crate::meta::SessionMeta,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut failing = false;
    while !*shutdown.borrow() {
        let (h, m) = (home.clone(), meta.clone());
        let said =
            tokio::task::spawn_blocking(move || super::status::publish(&h, id, &m, true)).await;
        match said {
            Ok(Err(e)) if !failing => {
                tracing::warn!("reporting this node's rows to the meta-volume: {e:#}");
                failing = true;
            }
            Ok(Ok(())) if failing => {
                tracing::info!("reporting this node's rows to the meta-volume again");
                failing = false;
            }
            _ => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(crate::meta::PUBLISH_EVERY) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// SIGHUP: re-reads the session's settings and applies what can change
/// while running (`live` options are read by the workers before each
/// batch; `log-level` is applied here). Logs each change and whether it
/// needs a restart. `running` is what is in effect.
fn reload(home: &Home, id: SessionId, running: &mut SessionConfig, log: &logging::LogHandle) {
    let stored = home
        .state()
        .map_err(anyhow::Error::from)
        .and_then(|st| Ok(st.session(id)?))
        .and_then(|s| Ok(SessionConfig::from_json(&s.config)?));
    let new = match stored {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(
                "config reload: cannot read the session settings: {e:#}; keeping the current ones"
            );
            return;
        }
    };
    let changes = running.changes(&new);
    if changes.is_empty() {
        tracing::info!("config reload: nothing changed");
    }
    for (spec, old, value) in changes {
        let (how, applied) = match spec.applies {
            Applies::Live => (
                "applied (the workers read it before each batch)".to_string(),
                true,
            ),
            Applies::Reload if spec.key == "log-level" => match log.set_level(&value) {
                Ok(()) => ("applied".to_string(), true),
                Err(e) => (format!("not applied: {e:#}"), false),
            },
            Applies::Reload => ("applied".to_string(), true),
            Applies::NextStart => (
                "needs a restart (geo-rep stop, then start)".to_string(),
                false,
            ),
            Applies::AtCreate => ("fixed at create; not applied".to_string(), false),
            Applies::NotYetApplied => ("stored; not yet applied by georep".to_string(), false),
        };
        tracing::info!(
            key = spec.key,
            old = %old,
            new = %value,
            "config reload: {} changed from {old:?} to {value:?}: {how}",
            spec.key
        );
        if applied {
            if let Ok(c) = running.with(spec.key, &value) {
                *running = c;
            }
        }
    }
    tracing::debug!(settings = %running.to_json(), "config reload: settings in effect");
}

/// Draws a bar per brick while its Hybrid Crawl runs (`start
/// --foreground` on a terminal).
async fn progress_bars(
    bars: indicatif::MultiProgress,
    state_home: std::path::PathBuf,
    session_id: SessionId,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use std::collections::HashMap;

    use indicatif::{ProgressBar, ProgressStyle};

    use crate::monitor::progress::describe;
    use crate::session::Timestamp;

    let Ok(state) = crate::state::State::open(&state_home) else {
        return;
    };
    let counted = ProgressStyle::with_template("{prefix} [{bar:20}] {wide_msg}")
        .expect("template")
        .progress_chars("=> ");
    let counting = ProgressStyle::with_template("{prefix} {spinner} {wide_msg}").expect("template");
    let mut shown: HashMap<crate::session::BrickId, (ProgressBar, Timestamp, bool)> =
        HashMap::new();
    while !*shutdown.borrow() {
        let now = Timestamp::now();
        for b in state.bricks(session_id).unwrap_or_default() {
            let p = b.progress;
            let Some(started) = p.started else { continue };
            let fresh = shown.get(&b.id).is_none_or(|(_, s, _)| *s != started);
            if fresh && p.finished.is_some() {
                continue; // an old crawl: nothing to show
            }
            if fresh {
                let bar = bars.add(ProgressBar::new(0));
                bar.set_style(counting.clone());
                bar.set_prefix(format!("Hybrid Crawl {}", b.brick));
                shown.insert(b.id, (bar, started, false));
            }
            let Some((bar, _, done)) = shown.get_mut(&b.id) else {
                continue;
            };
            if *done {
                continue;
            }
            if let Some(t) = p.total_files {
                if bar.length() != Some(t) {
                    bar.set_style(counted.clone());
                    bar.set_length(t);
                }
            }
            bar.set_position(p.files);
            bar.set_message(describe(&p, now).unwrap_or_default());
            bar.tick();
            if p.finished.is_some() {
                bar.finish();
                *done = true;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = shutdown.changed() => {}
        }
    }
}
