//! What georep remembers between runs: sessions, their bricks, and how far
//! each brick is synced (stime), in one SQLite database under `GEOREP_HOME`.
//!
//! Invariant 2 of DESIGN.md is enforced here as well as by the callers:
//! [`State::set_stime`] refuses to move a brick's stime backwards, in SQL, so
//! two writers cannot race it back.
//!
//! The monitor process writes worker status and counters; the CLI reads them.
//! WAL mode and a busy timeout let both work at once; a database locked for
//! longer than the timeout gives [`StateError::Locked`].

mod schema;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::session::{Brick, BrickId, SlaveUrl, Stime, VolumeName};

/// How long a writer waits for another process's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create state directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "state database {path} is locked by another process (is another geo-rep command running?)"
    )]
    Locked { path: PathBuf },
    #[error("state database {path}: {source}")]
    Sql {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("state database {path} has schema version {found}, newer than this geo-rep understands ({known}); upgrade geo-rep")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("a session from {0} to {1} already exists")]
    Exists(VolumeName, SlaveUrl),
    #[error("stime of brick {brick} would go backwards (stored {stored}, new {new})")]
    StimeBackwards {
        brick: BrickId,
        stored: Stime,
        new: Stime,
    },
    #[error("corrupt value {value:?} in column {column} of the state database")]
    Corrupt { column: &'static str, value: String },
}

/// The operator's intent for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    Created,
    Started,
    Paused,
    Stopped,
}

impl SessionState {
    fn as_str(self) -> &'static str {
        match self {
            SessionState::Created => "Created",
            SessionState::Started => "Started",
            SessionState::Paused => "Paused",
            SessionState::Stopped => "Stopped",
        }
    }
}

impl FromStr for SessionState {
    type Err = StateError;
    fn from_str(s: &str) -> Result<Self, StateError> {
        Ok(match s {
            "Created" => SessionState::Created,
            "Started" => SessionState::Started,
            "Paused" => SessionState::Paused,
            "Stopped" => SessionState::Stopped,
            _ => {
                return Err(StateError::Corrupt {
                    column: "sessions.state",
                    value: s.to_owned(),
                })
            }
        })
    }
}

/// A worker's STATUS column, as GlusterFS spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerStatus {
    Created,
    Initializing,
    Active,
    Passive,
    Faulty,
    Paused,
    Stopped,
}

impl WorkerStatus {
    pub const ALL: [WorkerStatus; 7] = [
        WorkerStatus::Created,
        WorkerStatus::Initializing,
        WorkerStatus::Active,
        WorkerStatus::Passive,
        WorkerStatus::Faulty,
        WorkerStatus::Paused,
        WorkerStatus::Stopped,
    ];
}

impl fmt::Display for WorkerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WorkerStatus::Created => "Created",
            WorkerStatus::Initializing => "Initializing...",
            WorkerStatus::Active => "Active",
            WorkerStatus::Passive => "Passive",
            WorkerStatus::Faulty => "Faulty",
            WorkerStatus::Paused => "Paused",
            WorkerStatus::Stopped => "Stopped",
        })
    }
}

/// A worker's CRAWL STATUS column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrawlStatus {
    Hybrid,
    History,
    Changelog,
    NotApplicable,
}

impl CrawlStatus {
    pub const ALL: [CrawlStatus; 4] = [
        CrawlStatus::Hybrid,
        CrawlStatus::History,
        CrawlStatus::Changelog,
        CrawlStatus::NotApplicable,
    ];
}

impl fmt::Display for CrawlStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CrawlStatus::Hybrid => "Hybrid Crawl",
            CrawlStatus::History => "History Crawl",
            CrawlStatus::Changelog => "Changelog Crawl",
            CrawlStatus::NotApplicable => "N/A",
        })
    }
}

fn parse_display<T: fmt::Display + Copy>(
    all: &[T],
    column: &'static str,
    s: &str,
) -> Result<T, StateError> {
    all.iter()
        .copied()
        .find(|v| v.to_string() == s)
        .ok_or_else(|| StateError::Corrupt {
            column,
            value: s.to_owned(),
        })
}

/// What `create` records about a session.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub master_vol: VolumeName,
    pub slave: SlaveUrl,
    pub port: u16,
    /// The slave's host key, OpenSSH public key format, pinned at create.
    pub host_key: String,
    /// Session settings as JSON (see `session::config`).
    pub config: String,
    pub bricks: Vec<Brick>,
}

/// A stored session.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id: i64,
    pub master_vol: VolumeName,
    pub slave: SlaveUrl,
    pub port: u16,
    pub host_key: String,
    pub config: String,
    pub state: SessionState,
    pub monitor_pid: Option<u32>,
    /// The operator's checkpoint: every change made before it should reach
    /// the slave.
    pub checkpoint: Option<Stime>,
    /// When every brick's stime was first seen at or past the checkpoint.
    pub checkpoint_completed: Option<Stime>,
}

/// A stored brick with its progress.
#[derive(Debug, Clone)]
pub struct BrickRecord {
    pub id: BrickId,
    pub session_id: i64,
    pub brick: Brick,
    pub stime: Option<Stime>,
    pub status: WorkerStatus,
    pub crawl: CrawlStatus,
    pub last_error: Option<String>,
    pub bytes_sent: u64,
    pub entries: u64,
    pub data: u64,
    pub meta: u64,
    pub failures: u64,
    pub progress: CrawlProgress,
}

/// The brick's latest Hybrid Crawl.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrawlProgress {
    pub started: Option<Stime>,
    /// `None` while it runs (or if it never ran).
    pub finished: Option<Stime>,
    /// Files shipped as data by it so far.
    pub files: u64,
    /// Protocol bytes it sent so far.
    pub bytes: u64,
    /// Files it has to ship in all, once counted (a walk beside the crawl).
    pub total_files: Option<u64>,
    /// Their size in bytes.
    pub total_bytes: Option<u64>,
}

/// Counts to add to a brick after a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub bytes_sent: u64,
    pub entries: u64,
    pub data: u64,
    pub meta: u64,
    pub failures: u64,
}

/// An open state database.
///
/// Shared by the tasks of one process (the connection sits behind a mutex;
/// every call is short).
pub struct State {
    conn: std::sync::Mutex<Connection>,
    path: PathBuf,
}

impl State {
    /// Opens (creating if needed) the state under `home`, which is made 0700.
    pub fn open(home: &Path) -> Result<State, StateError> {
        crate::fsutil::create_private_dir(home).map_err(|source| StateError::Dir {
            path: home.to_owned(),
            source,
        })?;
        let path = home.join("georep.db");
        let conn = Connection::open(&path).map_err(|source| StateError::Sql {
            path: path.clone(),
            source,
        })?;
        let state = State {
            conn: std::sync::Mutex::new(conn),
            path,
        };
        let mut conn = state.conn();
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| state.err(e))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| state.err(e))?;
        // A power loss may lose the last few updates, never corrupt the
        // database. Losing stime updates is safe: stime only lags, and a
        // replay is harmless. The worker updates it many times a second.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| state.err(e))?;
        schema::migrate(&mut conn).map_err(|e| match e {
            schema::MigrateError::TooNew { found, known } => StateError::TooNew {
                path: state.path.clone(),
                found,
                known,
            },
            schema::MigrateError::Sql(e) => state.err(e),
        })?;
        drop(conn);
        Ok(state)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: rusqlite::Error) -> StateError {
        if let rusqlite::Error::SqliteFailure(f, _) = &source {
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) {
                return StateError::Locked {
                    path: self.path.clone(),
                };
            }
        }
        StateError::Sql {
            path: self.path.clone(),
            source,
        }
    }

    pub fn create_session(&mut self, new: &NewSession) -> Result<SessionRecord, StateError> {
        if self.find_session(&new.master_vol, &new.slave)?.is_some() {
            return Err(StateError::Exists(
                new.master_vol.clone(),
                new.slave.clone(),
            ));
        }
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| StateError::Sql {
            path: self.path.clone(),
            source: e,
        })?;
        let insert = || -> rusqlite::Result<i64> {
            tx.execute(
                "INSERT INTO sessions (master_vol, slave_user, slave_host, slave_volume, port, host_key, config, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'Created')",
                params![
                    new.master_vol.as_str(),
                    new.slave.user,
                    new.slave.host,
                    new.slave.volume,
                    new.port,
                    new.host_key,
                    new.config
                ],
            )?;
            let id = tx.last_insert_rowid();
            for b in &new.bricks {
                tx.execute(
                    "INSERT INTO bricks (session_id, path, status, crawl) VALUES (?1, ?2, 'Created', 'N/A')",
                    params![id, b.path().to_string_lossy()],
                )?;
            }
            Ok(id)
        };
        let id = insert().map_err(|e| StateError::Sql {
            path: self.path.clone(),
            source: e,
        })?;
        tx.commit().map_err(|e| StateError::Sql {
            path: self.path.clone(),
            source: e,
        })?;
        drop(conn);
        self.session(id)
    }

    /// The session with row id `id`.
    pub fn session(&self, id: i64) -> Result<SessionRecord, StateError> {
        self.query_sessions("WHERE id = ?1", params![id])?
            .pop()
            .ok_or_else(|| self.err(rusqlite::Error::QueryReturnedNoRows))
    }

    pub fn find_session(
        &self,
        vol: &VolumeName,
        slave: &SlaveUrl,
    ) -> Result<Option<SessionRecord>, StateError> {
        Ok(self
            .query_sessions(
                "WHERE master_vol = ?1 AND slave_host = ?2 AND slave_volume = ?3",
                params![vol.as_str(), slave.host, slave.volume],
            )?
            .pop())
    }

    /// Every session, ordered by master volume then slave.
    pub fn sessions(&self) -> Result<Vec<SessionRecord>, StateError> {
        self.query_sessions("", params![])
    }

    fn query_sessions(
        &self,
        filter: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<SessionRecord>, StateError> {
        let sql = format!(
            "SELECT id, master_vol, slave_user, slave_host, slave_volume, port, host_key, config, state, monitor_pid,
                    checkpoint_ns, checkpoint_completed_ns
             FROM sessions {filter} ORDER BY master_vol, slave_host, slave_volume"
        );
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(args, |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    SlaveUrl {
                        user: r.get(2)?,
                        host: r.get(3)?,
                        volume: r.get(4)?,
                    },
                    r.get::<_, u16>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, String>(8)?,
                    r.get::<_, Option<u32>>(9)?,
                    (
                        r.get::<_, Option<i64>>(10)?.map(Stime),
                        r.get::<_, Option<i64>>(11)?.map(Stime),
                    ),
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, vol, slave, port, host_key, config, state, monitor_pid, checkpoint) =
                row.map_err(|e| self.err(e))?;
            out.push(SessionRecord {
                id,
                master_vol: vol.parse().map_err(|_| StateError::Corrupt {
                    column: "sessions.master_vol",
                    value: vol.clone(),
                })?,
                slave,
                port,
                host_key,
                config,
                state: state.parse()?,
                monitor_pid,
                checkpoint: checkpoint.0,
                checkpoint_completed: checkpoint.1,
            });
        }
        Ok(out)
    }

    pub fn set_session_state(
        &self,
        id: i64,
        state: SessionState,
        monitor_pid: Option<u32>,
    ) -> Result<(), StateError> {
        self.conn()
            .execute(
                "UPDATE sessions SET state = ?2, monitor_pid = ?3 WHERE id = ?1",
                params![id, state.as_str(), monitor_pid],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn set_config(&self, id: i64, config: &str) -> Result<(), StateError> {
        self.conn()
            .execute(
                "UPDATE sessions SET config = ?2 WHERE id = ?1",
                params![id, config],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Sets (or with `None` clears) the session's checkpoint; either way it
    /// is not completed yet.
    pub fn set_checkpoint(&self, id: i64, at: Option<Stime>) -> Result<(), StateError> {
        self.conn()
            .execute(
                "UPDATE sessions SET checkpoint_ns = ?2, checkpoint_completed_ns = NULL WHERE id = ?1",
                params![id, at.map(Stime::nanos)],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records the checkpoint of session `id` as completed at `now` if every
    /// brick's stime is at or past it and it was not completed before.
    /// True if this call completed it. One statement, so the monitor and a
    /// `status` cannot both record it.
    pub fn note_checkpoint(&self, id: i64, now: Stime) -> Result<bool, StateError> {
        let n = self
            .conn()
            .execute(
                "UPDATE sessions SET checkpoint_completed_ns = ?2
                 WHERE id = ?1 AND checkpoint_ns IS NOT NULL AND checkpoint_completed_ns IS NULL
                   AND EXISTS (SELECT 1 FROM bricks WHERE session_id = ?1)
                   AND NOT EXISTS (SELECT 1 FROM bricks WHERE session_id = ?1
                                   AND (stime_ns IS NULL OR stime_ns < sessions.checkpoint_ns))",
                params![id, now.nanos()],
            )
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    /// A Hybrid Crawl of `brick` begins: its progress starts from zero.
    /// Returns its start, which identifies it for [`State::crawl_total`].
    pub fn crawl_begin(&self, brick: BrickId) -> Result<Stime, StateError> {
        let started = Stime::now();
        self.conn()
            .execute(
                "UPDATE bricks SET crawl_started_ns = ?2, crawl_finished_ns = NULL, crawl_files = 0, crawl_bytes = 0,
                        crawl_total_files = NULL, crawl_total_bytes = NULL
                 WHERE id = ?1",
                params![brick.0, started.nanos()],
            )
            .map_err(|e| self.err(e))?;
        Ok(started)
    }

    /// The Hybrid Crawl of `brick` that began at `started` has `files`
    /// files of `bytes` bytes to ship in all. Ignored if another crawl
    /// began meanwhile.
    pub fn crawl_total(
        &self,
        brick: BrickId,
        started: Stime,
        files: u64,
        bytes: u64,
    ) -> Result<(), StateError> {
        self.conn()
            .execute(
                "UPDATE bricks SET crawl_total_files = ?3, crawl_total_bytes = ?4
                 WHERE id = ?1 AND crawl_started_ns = ?2",
                params![brick.0, started.nanos(), files as i64, bytes as i64],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The running Hybrid Crawl of `brick` shipped `files` more files in
    /// `bytes` more bytes.
    pub fn crawl_add(&self, brick: BrickId, files: u64, bytes: u64) -> Result<(), StateError> {
        self.conn()
            .execute(
                "UPDATE bricks SET crawl_files = crawl_files + ?2, crawl_bytes = crawl_bytes + ?3 WHERE id = ?1",
                params![brick.0, files as i64, bytes as i64],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn crawl_end(&self, brick: BrickId) -> Result<(), StateError> {
        self.conn()
            .execute(
                "UPDATE bricks SET crawl_finished_ns = ?2 WHERE id = ?1",
                params![brick.0, Stime::now().nanos()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Keeps the stimes of session `id`'s bricks for a session re-created
    /// later between the same master volume and slave (see
    /// [`State::take_kept_stimes`]).
    pub fn keep_stimes(&self, id: i64) -> Result<(), StateError> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO kept_stimes (master_vol, slave_host, slave_volume, brick_path, stime_ns)
                 SELECT s.master_vol, s.slave_host, s.slave_volume, b.path, b.stime_ns
                 FROM bricks b JOIN sessions s ON s.id = b.session_id
                 WHERE s.id = ?1 AND b.stime_ns IS NOT NULL",
                params![id],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Forgets kept stimes between `vol` and `slave` (`reset-sync-time`).
    pub fn forget_kept_stimes(&self, vol: &VolumeName, slave: &SlaveUrl) -> Result<(), StateError> {
        self.conn()
            .execute(
                "DELETE FROM kept_stimes WHERE master_vol = ?1 AND slave_host = ?2 AND slave_volume = ?3",
                params![vol.as_str(), slave.host, slave.volume],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Gives session `id`'s bricks the stimes a deleted session between the
    /// same volume and slave kept, and forgets them. Returns how many bricks
    /// got one.
    pub fn take_kept_stimes(&self, id: i64) -> Result<usize, StateError> {
        let session = self.session(id)?;
        let n = self
            .conn()
            .execute(
                "UPDATE bricks SET stime_ns = (
                     SELECT k.stime_ns FROM kept_stimes k
                     WHERE k.master_vol = ?2 AND k.slave_host = ?3 AND k.slave_volume = ?4 AND k.brick_path = bricks.path)
                 WHERE session_id = ?1 AND EXISTS (
                     SELECT 1 FROM kept_stimes k
                     WHERE k.master_vol = ?2 AND k.slave_host = ?3 AND k.slave_volume = ?4 AND k.brick_path = bricks.path)",
                params![
                    id,
                    session.master_vol.as_str(),
                    session.slave.host,
                    session.slave.volume
                ],
            )
            .map_err(|e| self.err(e))?;
        self.forget_kept_stimes(&session.master_vol, &session.slave)?;
        Ok(n)
    }

    pub fn delete_session(&self, id: i64) -> Result<(), StateError> {
        let conn = self.conn();
        conn.execute("DELETE FROM bricks WHERE session_id = ?1", params![id])
            .and_then(|_| conn.execute("DELETE FROM sessions WHERE id = ?1", params![id]))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn bricks(&self, session_id: i64) -> Result<Vec<BrickRecord>, StateError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, path, stime_ns, status, crawl, last_error, bytes_sent, entries, data, meta, failures,
                        crawl_started_ns, crawl_finished_ns, crawl_files, crawl_bytes,
                        crawl_total_files, crawl_total_bytes
                 FROM bricks WHERE session_id = ?1 ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![session_id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    [
                        r.get::<_, i64>(6)?,
                        r.get::<_, i64>(7)?,
                        r.get::<_, i64>(8)?,
                        r.get::<_, i64>(9)?,
                        r.get::<_, i64>(10)?,
                    ],
                    CrawlProgress {
                        started: r.get::<_, Option<i64>>(11)?.map(Stime),
                        finished: r.get::<_, Option<i64>>(12)?.map(Stime),
                        files: r.get::<_, i64>(13)? as u64,
                        bytes: r.get::<_, i64>(14)? as u64,
                        total_files: r.get::<_, Option<i64>>(15)?.map(|n| n as u64),
                        total_bytes: r.get::<_, Option<i64>>(16)?.map(|n| n as u64),
                    },
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, path, stime, status, crawl, last_error, n, progress) =
                row.map_err(|e| self.err(e))?;
            out.push(BrickRecord {
                id: BrickId(id),
                session_id,
                brick: Brick::new(&path).map_err(|_| StateError::Corrupt {
                    column: "bricks.path",
                    value: path.clone(),
                })?,
                stime: stime.map(Stime),
                status: parse_display(&WorkerStatus::ALL, "bricks.status", &status)?,
                crawl: parse_display(&CrawlStatus::ALL, "bricks.crawl", &crawl)?,
                last_error,
                bytes_sent: n[0] as u64,
                entries: n[1] as u64,
                data: n[2] as u64,
                meta: n[3] as u64,
                failures: n[4] as u64,
                progress,
            });
        }
        Ok(out)
    }

    pub fn bricks_by_id(&self, id: BrickId) -> Result<Option<BrickRecord>, StateError> {
        let session: Option<i64> = self
            .conn()
            .query_row(
                "SELECT session_id FROM bricks WHERE id = ?1",
                params![id.0],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let Some(session) = session else {
            return Ok(None);
        };
        Ok(self.bricks(session)?.into_iter().find(|b| b.id == id))
    }

    /// Records that everything on `brick` before `stime` is durably on the
    /// slave. Refuses to go backwards.
    pub fn set_stime(&self, brick: BrickId, stime: Stime) -> Result<(), StateError> {
        let changed = self
            .conn()
            .execute(
                "UPDATE bricks SET stime_ns = ?2 WHERE id = ?1 AND (stime_ns IS NULL OR stime_ns <= ?2)",
                params![brick.0, stime.nanos()],
            )
            .map_err(|e| self.err(e))?;
        if changed == 0 {
            let stored: Option<i64> = self
                .conn()
                .query_row(
                    "SELECT stime_ns FROM bricks WHERE id = ?1",
                    params![brick.0],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| self.err(e))?
                .flatten();
            return Err(StateError::StimeBackwards {
                brick,
                stored: Stime(stored.unwrap_or_default()),
                new: stime,
            });
        }
        Ok(())
    }

    /// Forgets a brick's stime, so the next start does a full Hybrid Crawl.
    pub fn reset_stime(&self, session_id: i64) -> Result<(), StateError> {
        self.conn()
            .execute(
                "UPDATE bricks SET stime_ns = NULL WHERE session_id = ?1",
                params![session_id],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn set_worker(
        &self,
        brick: BrickId,
        status: WorkerStatus,
        crawl: CrawlStatus,
    ) -> Result<(), StateError> {
        self.conn()
            .execute(
                "UPDATE bricks SET status = ?2, crawl = ?3 WHERE id = ?1",
                params![brick.0, status.to_string(), crawl.to_string()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Sets or clears the last error shown for a brick.
    pub fn set_last_error(&self, brick: BrickId, error: Option<&str>) -> Result<(), StateError> {
        self.conn()
            .execute(
                "UPDATE bricks SET last_error = ?2 WHERE id = ?1",
                params![brick.0, error],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn add_counters(&self, brick: BrickId, c: Counters) -> Result<(), StateError> {
        self.conn()
            .execute(
                "UPDATE bricks SET bytes_sent = bytes_sent + ?2, entries = entries + ?3, data = data + ?4,
                 meta = meta + ?5, failures = failures + ?6 WHERE id = ?1",
                params![
                    brick.0,
                    c.bytes_sent as i64,
                    c.entries as i64,
                    c.data as i64,
                    c.meta as i64,
                    c.failures as i64
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) -> (State, SessionRecord) {
        let mut st = State::open(dir).unwrap();
        let s = st
            .create_session(&NewSession {
                master_vol: "gv0".parse().unwrap(),
                slave: "root@h::/srv/x".parse().unwrap(),
                port: 22,
                host_key: "ssh-ed25519 AAAA".into(),
                config: "{}".into(),
                bricks: vec![Brick::new("/b1").unwrap(), Brick::new("/b2").unwrap()],
            })
            .unwrap();
        (st, s)
    }

    #[test]
    fn sessions_and_bricks_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (st, s) = sample(dir.path());
        assert_eq!(s.state, SessionState::Created);
        let bricks = st.bricks(s.id).unwrap();
        assert_eq!(bricks.len(), 2);
        assert_eq!(bricks[0].status, WorkerStatus::Created);
        assert_eq!(bricks[0].crawl, CrawlStatus::NotApplicable);
        assert_eq!(bricks[0].stime, None);
        st.set_worker(
            bricks[0].id,
            WorkerStatus::Initializing,
            CrawlStatus::Hybrid,
        )
        .unwrap();
        let b = &st.bricks(s.id).unwrap()[0];
        assert_eq!(
            (b.status, b.crawl),
            (WorkerStatus::Initializing, CrawlStatus::Hybrid)
        );
        let again = State::open(dir.path()).unwrap();
        assert_eq!(again.sessions().unwrap().len(), 1);
    }

    #[test]
    fn duplicate_session_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut st, _) = sample(dir.path());
        let err = st
            .create_session(&NewSession {
                master_vol: "gv0".parse().unwrap(),
                slave: "root@h::/srv/x".parse().unwrap(),
                port: 22,
                host_key: String::new(),
                config: "{}".into(),
                bricks: vec![],
            })
            .unwrap_err();
        assert!(matches!(err, StateError::Exists(..)), "{err}");
    }

    #[test]
    fn stime_never_goes_backwards() {
        let dir = tempfile::tempdir().unwrap();
        let (st, s) = sample(dir.path());
        let b = st.bricks(s.id).unwrap()[0].id;
        st.set_stime(b, Stime(100)).unwrap();
        st.set_stime(b, Stime(100)).unwrap();
        st.set_stime(b, Stime(200)).unwrap();
        let err = st.set_stime(b, Stime(150)).unwrap_err();
        assert!(matches!(err, StateError::StimeBackwards { .. }), "{err}");
        assert_eq!(st.bricks(s.id).unwrap()[0].stime, Some(Stime(200)));
        st.add_counters(
            b,
            Counters {
                bytes_sent: 5,
                failures: 1,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(st.bricks(s.id).unwrap()[0].bytes_sent, 5);
    }

    #[test]
    fn checkpoint_completes_once_every_brick_passes_it() {
        let dir = tempfile::tempdir().unwrap();
        let (st, s) = sample(dir.path());
        let b: Vec<BrickId> = st.bricks(s.id).unwrap().iter().map(|b| b.id).collect();
        assert!(
            !st.note_checkpoint(s.id, Stime(1)).unwrap(),
            "no checkpoint set"
        );
        st.set_checkpoint(s.id, Some(Stime(100))).unwrap();
        st.set_stime(b[0], Stime(150)).unwrap();
        assert!(
            !st.note_checkpoint(s.id, Stime(160)).unwrap(),
            "brick 2 has no stime"
        );
        st.set_stime(b[1], Stime(99)).unwrap();
        assert!(
            !st.note_checkpoint(s.id, Stime(170)).unwrap(),
            "brick 2 is behind"
        );
        st.set_stime(b[1], Stime(100)).unwrap();
        assert!(st.note_checkpoint(s.id, Stime(180)).unwrap());
        assert!(!st.note_checkpoint(s.id, Stime(190)).unwrap(), "only once");
        let r = st.find_session(&s.master_vol, &s.slave).unwrap().unwrap();
        assert_eq!(
            (r.checkpoint, r.checkpoint_completed),
            (Some(Stime(100)), Some(Stime(180)))
        );
        st.set_checkpoint(s.id, Some(Stime(200))).unwrap();
        let r = st.find_session(&s.master_vol, &s.slave).unwrap().unwrap();
        assert_eq!(
            (r.checkpoint, r.checkpoint_completed),
            (Some(Stime(200)), None)
        );
    }

    #[test]
    fn kept_stimes_go_to_a_recreated_session_once() {
        let dir = tempfile::tempdir().unwrap();
        let (mut st, s) = sample(dir.path());
        let b = st.bricks(s.id).unwrap()[0].id;
        st.set_stime(b, Stime(500)).unwrap();
        st.keep_stimes(s.id).unwrap();
        st.delete_session(s.id).unwrap();
        let again = st
            .create_session(&NewSession {
                master_vol: "gv0".parse().unwrap(),
                slave: "root@h::/srv/x".parse().unwrap(),
                port: 22,
                host_key: String::new(),
                config: "{}".into(),
                bricks: vec![Brick::new("/b1").unwrap(), Brick::new("/b3").unwrap()],
            })
            .unwrap();
        assert_eq!(st.take_kept_stimes(again.id).unwrap(), 1);
        let stimes: Vec<Option<Stime>> = st
            .bricks(again.id)
            .unwrap()
            .iter()
            .map(|b| b.stime)
            .collect();
        assert_eq!(stimes, vec![Some(Stime(500)), None]);
        assert_eq!(st.take_kept_stimes(again.id).unwrap(), 0, "taken once");
    }

    #[test]
    fn crawl_progress_accumulates() {
        let dir = tempfile::tempdir().unwrap();
        let (st, s) = sample(dir.path());
        let b = st.bricks(s.id).unwrap()[0].id;
        let started = st.crawl_begin(b).unwrap();
        st.crawl_add(b, 2, 100).unwrap();
        st.crawl_add(b, 3, 50).unwrap();
        let p = st.bricks(s.id).unwrap()[0].progress;
        assert_eq!((p.files, p.bytes, p.finished), (5, 150, None));
        assert_eq!(p.started, Some(started));
        assert_eq!(p.total_files, None);
        st.crawl_total(b, started, 10, 4096).unwrap();
        st.crawl_total(b, Stime(started.0 - 1), 99, 99).unwrap();
        let p = st.bricks(s.id).unwrap()[0].progress;
        assert_eq!((p.total_files, p.total_bytes), (Some(10), Some(4096)));
        std::thread::sleep(std::time::Duration::from_millis(2));
        st.crawl_begin(b).unwrap();
        let p = st.bricks(s.id).unwrap()[0].progress;
        assert_eq!(
            (p.files, p.total_files),
            (0, None),
            "a new crawl starts afresh"
        );
        st.crawl_end(b).unwrap();
        assert!(st.bricks(s.id).unwrap()[0].progress.finished.is_some());
    }

    #[test]
    fn a_version_1_database_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("georep.db")).unwrap();
        conn.execute_batch(schema::MIGRATIONS[0]).unwrap();
        conn.execute_batch(
            "INSERT INTO sessions (master_vol, slave_user, slave_host, slave_volume, port, host_key, config, state)
             VALUES ('gv0', 'root', 'h', '/x', 22, 'k', '{}', 'Stopped');
             INSERT INTO bricks (session_id, path, stime_ns, status, crawl) VALUES (1, '/b', 42, 'Stopped', 'N/A');
             PRAGMA user_version = 1;",
        )
        .unwrap();
        drop(conn);
        let st = State::open(dir.path()).unwrap();
        let s = &st.sessions().unwrap()[0];
        assert_eq!(s.checkpoint, None);
        let b = &st.bricks(s.id).unwrap()[0];
        assert_eq!(
            (b.stime, b.progress),
            (Some(Stime(42)), CrawlProgress::default())
        );
    }

    #[test]
    fn a_database_locked_by_another_process_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let (st, s) = sample(dir.path());
        let b = st.bricks(s.id).unwrap()[0].id;
        // Another process holds the write lock for longer than we wait.
        let other = Connection::open(dir.path().join("georep.db")).unwrap();
        other.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let err = st.set_stime(b, Stime(1)).unwrap_err().to_string();
        assert!(err.contains("locked by another process"), "{err}");
        assert!(err.contains("georep.db"), "names the database: {err}");
        other.execute_batch("ROLLBACK").unwrap();
        st.set_stime(b, Stime(1)).unwrap();
    }

    #[test]
    fn the_state_directory_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
        drop(State::open(&home).unwrap());
        let mode = std::fs::metadata(&home).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(sample(dir.path()));
        let conn = Connection::open(dir.path().join("georep.db")).unwrap();
        conn.pragma_update(None, "user_version", 999).unwrap();
        drop(conn);
        let err = State::open(dir.path()).err().unwrap();
        assert!(err.to_string().contains("upgrade geo-rep"), "{err}");
    }
}
