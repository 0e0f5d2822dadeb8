//! Sessions: their records, intent, settings and checkpoint.

use rusqlite::params;

use super::*;

impl State {
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
        self.session(SessionId::new(id))
    }

    /// The session with row id `id`.
    pub fn session(&self, id: SessionId) -> Result<SessionRecord, StateError> {
        self.query_sessions("WHERE id = ?1", params![id.row()])?
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
                        r.get::<_, Option<i64>>(10)?.map(Timestamp::from_nanos),
                        r.get::<_, Option<i64>>(11)?.map(Timestamp::from_nanos),
                    ),
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, vol, slave, port, host_key, config, state, monitor_pid, checkpoint) =
                row.map_err(|e| self.err(e))?;
            out.push(SessionRecord {
                id: SessionId::new(id),
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
        id: SessionId,
        state: SessionState,
        monitor_pid: Option<u32>,
    ) -> Result<(), StateError> {
        self.conn()
            .execute(
                "UPDATE sessions SET state = ?2, monitor_pid = ?3 WHERE id = ?1",
                params![id.row(), state.as_str(), monitor_pid],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn set_config(&self, id: SessionId, config: &str) -> Result<(), StateError> {
        self.conn()
            .execute(
                "UPDATE sessions SET config = ?2 WHERE id = ?1",
                params![id.row(), config],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Sets (or with `None` clears) the session's checkpoint; either way it
    /// is not completed yet.
    pub fn set_checkpoint(&self, id: SessionId, at: Option<Timestamp>) -> Result<(), StateError> {
        self.conn()
            .execute(
                "UPDATE sessions SET checkpoint_ns = ?2, checkpoint_completed_ns = NULL WHERE id = ?1",
                params![id.row(), at.map(Timestamp::nanos)],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records the checkpoint of session `id` as completed at `now` if every
    /// brick's stime is at or past it and it was not completed before.
    /// The comparison is in SQL: `checkpoint_ns` holds the nanoseconds of
    /// the checkpoint's [`Timestamp`], the same as its
    /// [`Timestamp::as_stime`], the stime that covers it.
    /// True if this call completed it. One statement, so the monitor and a
    /// `status` cannot both record it.
    pub fn note_checkpoint(&self, id: SessionId, now: Timestamp) -> Result<bool, StateError> {
        let n = self
            .conn()
            .execute(
                "UPDATE sessions SET checkpoint_completed_ns = ?2
                 WHERE id = ?1 AND checkpoint_ns IS NOT NULL AND checkpoint_completed_ns IS NULL
                   AND EXISTS (SELECT 1 FROM bricks WHERE session_id = ?1)
                   AND NOT EXISTS (SELECT 1 FROM bricks WHERE session_id = ?1
                                   AND (stime_ns IS NULL OR stime_ns < sessions.checkpoint_ns))",
                params![id.row(), now.nanos()],
            )
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    pub fn delete_session(&self, id: SessionId) -> Result<(), StateError> {
        let conn = self.conn();
        conn.execute(
            "DELETE FROM bricks WHERE session_id = ?1",
            params![id.row()],
        )
        .and_then(|_| conn.execute("DELETE FROM sessions WHERE id = ?1", params![id.row()]))
        .map_err(|e| self.err(e))?;
        Ok(())
    }
}
