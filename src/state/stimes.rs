//! stime: how far each brick is synced, never moved backwards, and kept
//! across a delete for the next session into the same slave.

use rusqlite::{params, OptionalExtension};

use super::*;

impl State {
    /// Keeps the stimes of session `id`'s bricks for a session re-created
    /// later between the same master volume and slave (see
    /// [`State::take_kept_stimes`]).
    pub fn keep_stimes(&self, id: SessionId) -> Result<(), StateError> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO kept_stimes (master_vol, slave_host, slave_volume, brick_path, stime_ns)
                 SELECT s.master_vol, s.slave_host, s.slave_volume, b.path, b.stime_ns
                 FROM bricks b JOIN sessions s ON s.id = b.session_id
                 WHERE s.id = ?1 AND b.stime_ns IS NOT NULL",
                params![id.row()],
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
    pub fn take_kept_stimes(&self, id: SessionId) -> Result<usize, StateError> {
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
                    id.row(),
                    session.master_vol.as_str(),
                    session.slave.host,
                    session.slave.volume
                ],
            )
            .map_err(|e| self.err(e))?;
        self.forget_kept_stimes(&session.master_vol, &session.slave)?;
        Ok(n)
    }

    /// Records that everything on `brick` before `stime` is durably on the
    /// slave. Refuses to go backwards.
    pub fn set_stime(&self, brick: BrickId, stime: Stime) -> Result<(), StateError> {
        let changed = self
            .conn()
            .execute(
                "UPDATE bricks SET stime_ns = ?2 WHERE id = ?1 AND (stime_ns IS NULL OR stime_ns <= ?2)",
                params![brick.row(), stime.nanos()],
            )
            .map_err(|e| self.err(e))?;
        if changed == 0 {
            let stored: Option<i64> = self
                .conn()
                .query_row(
                    "SELECT stime_ns FROM bricks WHERE id = ?1",
                    params![brick.row()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| self.err(e))?
                .flatten();
            return Err(StateError::StimeBackwards {
                brick,
                stored: Stime::from_nanos(stored.unwrap_or_default()),
                new: stime,
            });
        }
        Ok(())
    }

    /// Records that everything on the bricks `members` (the bricks of one
    /// replica set) before `stime` is durably on the slave: every member's
    /// row at once, in one statement, so whichever member ships next
    /// starts from it. A member already past `stime` keeps its own; the
    /// first member refuses to go backwards as [`State::set_stime`] does.
    pub fn set_stime_of_set(&self, members: &[BrickId], stime: Stime) -> Result<(), StateError> {
        let Some(first) = members.first() else {
            return Ok(());
        };
        let stored = self
            .bricks_by_id(*first)?
            .and_then(|b| b.stime)
            .filter(|s| *s > stime);
        if let Some(stored) = stored {
            return Err(StateError::StimeBackwards {
                brick: *first,
                stored,
                new: stime,
            });
        }
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        for m in members {
            tx.execute(
                "UPDATE bricks SET stime_ns = ?2 WHERE id = ?1 AND (stime_ns IS NULL OR stime_ns <= ?2)",
                params![m.row(), stime.nanos()],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Forgets a brick's stime, so the next start does a full Hybrid Crawl.
    pub fn reset_stime(&self, session_id: SessionId) -> Result<(), StateError> {
        self.conn()
            .execute(
                "UPDATE bricks SET stime_ns = NULL WHERE session_id = ?1",
                params![session_id.row()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}
