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
//!
//! May import: `session`, `fsutil`.

mod bricks;
mod crawl;
mod records;
mod schema;
mod sessions;
mod status;
mod stimes;
#[cfg(test)]
mod tests;

pub use records::{BrickRecord, Counters, CrawlProgress, NewSession, SessionRecord};
use status::parse_display;
pub use status::{CrawlStatus, SessionState, WorkerStatus};

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

use crate::session::{Brick, BrickId, SessionId, SlaveUrl, Stime, Timestamp, VolumeName};

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
}
