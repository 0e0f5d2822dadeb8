//! Schema migrations, numbered by SQLite's `user_version`. Each step runs in
//! one transaction; a database from a newer georep is refused, not touched.

use rusqlite::Connection;

/// Each entry takes the schema from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
    // 0 -> 1: first schema.
    "CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        master_vol TEXT NOT NULL,
        slave_user TEXT NOT NULL,
        slave_host TEXT NOT NULL,
        slave_volume TEXT NOT NULL,
        port INTEGER NOT NULL,
        host_key TEXT NOT NULL,
        config TEXT NOT NULL,
        state TEXT NOT NULL,
        monitor_pid INTEGER,
        UNIQUE (master_vol, slave_host, slave_volume)
    );
    CREATE TABLE bricks (
        id INTEGER PRIMARY KEY,
        session_id INTEGER NOT NULL REFERENCES sessions(id),
        path TEXT NOT NULL,
        stime_ns INTEGER,
        status TEXT NOT NULL,
        crawl TEXT NOT NULL,
        last_error TEXT,
        bytes_sent INTEGER NOT NULL DEFAULT 0,
        entries INTEGER NOT NULL DEFAULT 0,
        data INTEGER NOT NULL DEFAULT 0,
        meta INTEGER NOT NULL DEFAULT 0,
        failures INTEGER NOT NULL DEFAULT 0,
        UNIQUE (session_id, path)
    );",
    // 1 -> 2: checkpoints, Hybrid Crawl progress, and the stimes a deleted
    // session left behind for a re-created one (`delete` without
    // `reset-sync-time`).
    "ALTER TABLE sessions ADD COLUMN checkpoint_ns INTEGER;
    ALTER TABLE sessions ADD COLUMN checkpoint_completed_ns INTEGER;
    ALTER TABLE bricks ADD COLUMN crawl_started_ns INTEGER;
    ALTER TABLE bricks ADD COLUMN crawl_finished_ns INTEGER;
    ALTER TABLE bricks ADD COLUMN crawl_files INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE bricks ADD COLUMN crawl_bytes INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE kept_stimes (
        master_vol TEXT NOT NULL,
        slave_host TEXT NOT NULL,
        slave_volume TEXT NOT NULL,
        brick_path TEXT NOT NULL,
        stime_ns INTEGER NOT NULL,
        PRIMARY KEY (master_vol, slave_host, slave_volume, brick_path)
    );",
    // 2 -> 3: the size of a running Hybrid Crawl (counted beside it), for
    // an estimate of the time left.
    "ALTER TABLE bricks ADD COLUMN crawl_total_files INTEGER;
    ALTER TABLE bricks ADD COLUMN crawl_total_bytes INTEGER;",
    // 3 -> 4: the GlusterFS subvolume (replica set) of a brick, and whether
    // it is an arbiter: the bricks of one set share one stime.
    "ALTER TABLE bricks ADD COLUMN subvolume TEXT;
    ALTER TABLE bricks ADD COLUMN arbiter INTEGER NOT NULL DEFAULT 0;",
];

pub(super) enum MigrateError {
    TooNew { found: i64, known: i64 },
    Sql(rusqlite::Error),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(e: rusqlite::Error) -> Self {
        MigrateError::Sql(e)
    }
}

pub(super) fn migrate(conn: &mut Connection) -> Result<(), MigrateError> {
    let known = MIGRATIONS.len() as i64;
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > known {
        return Err(MigrateError::TooNew { found, known });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}
