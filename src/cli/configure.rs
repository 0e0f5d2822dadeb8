//! `geo-rep config MASTERVOL SLAVE [KEY [VALUE]]` (and `!KEY`), and
//! `geo-rep checkpoint wait`.

use std::time::{Duration, Instant};

use anyhow::bail;

use super::lifecycle::monitor_alive;
use super::status::{local, pool_behind, render_table};
use super::{find_session, Home, UsageError};
use crate::session::config::{option, Applies, ConfigError, SessionConfig, OPTIONS};
use crate::session::{SlaveUrl, Timestamp, VolumeName};
use crate::state::{SessionRecord, SessionState, State, WorkerStatus};

/// What `config` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOp {
    List,
    Get(String),
    Set(String, String),
    Reset(String),
    /// `--load FILE`: every `key = value` of a config file.
    Load(std::path::PathBuf),
}

impl ConfigOp {
    pub fn from_words(words: &[String]) -> ConfigOp {
        match words {
            [] => ConfigOp::List,
            [k] => match k.strip_prefix('!') {
                Some(k) => ConfigOp::Reset(k.to_owned()),
                None => ConfigOp::Get(k.clone()),
            },
            [k, v, ..] => ConfigOp::Set(k.clone(), v.clone()),
        }
    }

    /// Whether it changes the session (which a pool's nodes then share).
    pub fn changes(&self) -> bool {
        matches!(
            self,
            ConfigOp::Set(..) | ConfigOp::Reset(_) | ConfigOp::Load(_)
        )
    }
}

/// Bad keys and values are the command line's fault: exit 2.
fn usage(e: ConfigError) -> anyhow::Error {
    UsageError(e.to_string()).into()
}

/// `checkpoint now` or whole seconds since the epoch.
fn parse_checkpoint(v: &str) -> Result<Timestamp, UsageError> {
    if v == "now" {
        return Ok(Timestamp::now());
    }
    match v.parse::<i64>() {
        Ok(secs) if secs > 0 && secs < i64::MAX / 1_000_000_000 => Ok(Timestamp::from_secs(secs)),
        _ => Err(UsageError(format!(
            "invalid value for checkpoint: {v:?} (expected `now` or seconds since the epoch)"
        ))),
    }
}

fn show(v: &str) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.to_owned()
    }
}

pub fn config(home: &Home, vol: &VolumeName, slave: &SlaveUrl, op: ConfigOp) -> anyhow::Result<()> {
    let state = home.state()?;
    let session = find_session(&state, vol, slave)?;
    let config = SessionConfig::from_json(&session.config)?;
    let running = monitor_alive(session.monitor_pid);
    match op {
        ConfigOp::List => {
            let default = SessionConfig::default();
            let mut rows = vec![vec![
                "checkpoint".to_string(),
                session
                    .checkpoint
                    .map(|t| format!("{} ({})", local(t), t.secs()))
                    .unwrap_or_else(|| "-".into()),
                "-".into(),
                "live".into(),
            ]];
            for o in OPTIONS {
                rows.push(vec![
                    o.key.to_string(),
                    show(&config.get(o.key)?),
                    show(&default.get(o.key)?),
                    o.applies.to_string(),
                ]);
            }
            print!(
                "{}",
                render_table(&["KEY", "VALUE", "DEFAULT", "APPLIES"], &rows)
            );
        }
        ConfigOp::Get(key) if key == "checkpoint" => {
            println!(
                "{}",
                session
                    .checkpoint
                    .map(|t| t.secs().to_string())
                    .unwrap_or_default()
            );
        }
        ConfigOp::Get(key) => println!("{}", config.get(&key).map_err(usage)?),
        ConfigOp::Set(key, value) if key == "checkpoint" => {
            let at = parse_checkpoint(&value)?;
            state.set_checkpoint(session.id, Some(at))?;
            println!(
                "checkpoint of {vol} -> {slave} set to {} ({})",
                local(at),
                at.secs()
            );
        }
        ConfigOp::Reset(key) if key == "checkpoint" => {
            state.set_checkpoint(session.id, None)?;
            println!("checkpoint of {vol} -> {slave} cleared");
        }
        ConfigOp::Set(key, value) => {
            let new = config.with(&key, &value).map_err(usage)?;
            save(&state, &session, &new, &key, running)?;
        }
        ConfigOp::Reset(key) => {
            let new = config.without(&key).map_err(usage)?;
            save(&state, &session, &new, &key, running)?;
        }
        ConfigOp::Load(file) => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
            let new = config
                .with_file(&file.display().to_string(), &text)
                .map_err(usage)?;
            let changes = config.changes(&new);
            state.set_config(session.id, &new.to_json())?;
            println!(
                "geo-replication config loaded from {}: {} setting(s) changed",
                file.display(),
                changes.len()
            );
            for (spec, old, value) in changes {
                println!(
                    "{} = {value} (was {old}; applies: {})",
                    spec.key, spec.applies
                );
            }
        }
    }
    Ok(())
}

fn save(
    state: &State,
    session: &SessionRecord,
    new: &SessionConfig,
    key: &str,
    running: bool,
) -> anyhow::Result<()> {
    state.set_config(session.id, &new.to_json())?;
    let spec = option(key).map_err(usage)?;
    println!(
        "geo-replication config updated successfully: {key} = {}",
        new.get(key)?
    );
    match spec.applies {
        Applies::NextStart if running => {
            println!("note: {key} takes effect at the next start (stop and start the session)")
        }
        Applies::Reload if running => println!(
            "note: {key} takes effect at the next reload (systemctl reload, or SIGHUP to the monitor pid {}) or start",
            session.monitor_pid.unwrap_or(0)
        ),
        Applies::NotYetApplied => println!("note: {key} is stored but not yet applied by georep"),
        _ => {}
    }
    Ok(())
}

/// How long `checkpoint wait` sleeps between looks.
const WAIT_POLL: Duration = Duration::from_millis(250);

/// `geo-rep checkpoint wait`: Ok once the checkpoint is completed (on a
/// volume of several nodes: by every node's rows, see [`pool_behind`]); an error
/// (exit 1) with a one-line reason on timeout, when a brick stays Faulty for
/// `faulty_grace`, or when the session is not running.
pub fn wait(
    home: &Home,
    vol: &VolumeName,
    slave: &SlaveUrl,
    timeout: Option<Duration>,
    faulty_grace: Duration,
) -> anyhow::Result<()> {
    let state = home.state()?;
    let began = Instant::now();
    let mut faulty_since: Option<Instant> = None;
    loop {
        let id = find_session(&state, vol, slave)?.id;
        state.note_checkpoint(id, Timestamp::now())?;
        let session = state.session(id)?;
        let Some(cp) = session.checkpoint else {
            bail!("no checkpoint is set for {vol} -> {slave}; set one with `geo-rep config {vol} {slave} checkpoint now`");
        };
        // On a volume of several nodes this node's bricks are not all:
        // every node's rows on the meta-volume decide.
        let pool = pool_behind(home, &state, &session, cp.as_stime())?;
        match (&pool, session.checkpoint_completed) {
            (Some(left), _) if left.is_empty() => {
                println!(
                    "checkpoint {} of {vol} -> {slave} completed on every node",
                    local(cp)
                );
                return Ok(());
            }
            (None, Some(done)) => {
                println!(
                    "checkpoint {} of {vol} -> {slave} completed at {}",
                    local(cp),
                    local(done)
                );
                return Ok(());
            }
            _ => {}
        }
        match session.state {
            SessionState::Created | SessionState::Stopped => {
                bail!("checkpoint {} of {vol} -> {slave} cannot complete: the session is not started", local(cp))
            }
            SessionState::Paused => {
                bail!("checkpoint {} of {vol} -> {slave} cannot complete: the session is paused", local(cp))
            }
            SessionState::Started if !monitor_alive(session.monitor_pid) => bail!(
                "checkpoint {} of {vol} -> {slave} cannot complete: the monitor is not running; run `geo-rep start {vol} {slave} force`",
                local(cp)
            ),
            SessionState::Started => {}
        }
        let bricks = state.bricks(id)?;
        let faulty = bricks.iter().find(|b| b.status == WorkerStatus::Faulty);
        if bricks
            .iter()
            .all(|b| matches!(b.status, WorkerStatus::Active | WorkerStatus::Passive))
        {
            faulty_since = None;
        }
        if let Some(b) = faulty {
            let since = *faulty_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= faulty_grace {
                bail!(
                    "checkpoint {} of {vol} -> {slave} not completed: brick {} is Faulty: {}",
                    local(cp),
                    b.brick,
                    one_line(b.last_error.as_deref().unwrap_or("no error recorded"))
                );
            }
        }
        if let Some(t) = timeout {
            if began.elapsed() >= t {
                let behind: Vec<String> = pool.unwrap_or_else(|| {
                    bricks
                        .iter()
                        .filter(|b| b.stime.is_none_or(|s| s < cp.as_stime()))
                        .map(|b| {
                            format!(
                                "{} {} synced to {}",
                                b.brick,
                                b.status,
                                b.stime
                                    .map(|s| local(s.as_timestamp()))
                                    .unwrap_or_else(|| "never".into())
                            )
                        })
                        .collect()
                });
                bail!(
                    "checkpoint {} of {vol} -> {slave} not completed after {} s ({})",
                    local(cp),
                    t.as_secs(),
                    behind.join("; ")
                );
            }
        }
        std::thread::sleep(WAIT_POLL);
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn config_words() {
        assert_eq!(ConfigOp::from_words(&[]), ConfigOp::List);
        assert_eq!(
            ConfigOp::from_words(&w(&["timeout"])),
            ConfigOp::Get("timeout".into())
        );
        assert_eq!(
            ConfigOp::from_words(&w(&["!timeout"])),
            ConfigOp::Reset("timeout".into())
        );
        assert_eq!(
            ConfigOp::from_words(&w(&["timeout", "5"])),
            ConfigOp::Set("timeout".into(), "5".into())
        );
    }

    #[test]
    fn checkpoint_values() {
        assert!(parse_checkpoint("now").is_ok());
        assert_eq!(
            parse_checkpoint("1700000000").unwrap(),
            Timestamp::from_secs(1_700_000_000)
        );
        for bad in ["", "0", "-5", "yesterday", "1.5", "99999999999999999999"] {
            let e = parse_checkpoint(bad).unwrap_err().to_string();
            assert!(e.contains("checkpoint"), "{bad}: {e}");
        }
    }
}
