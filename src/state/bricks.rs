//! Bricks: their records, worker status and counters.

use rusqlite::{params, OptionalExtension};

use super::*;

impl State {
    pub fn bricks(&self, session_id: SessionId) -> Result<Vec<BrickRecord>, StateError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, path, stime_ns, status, crawl, last_error, bytes_sent, entries, data, meta, failures,
                        crawl_started_ns, crawl_finished_ns, crawl_files, crawl_bytes,
                        crawl_total_files, crawl_total_bytes, subvolume, arbiter
                 FROM bricks WHERE session_id = ?1 ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![session_id.row()], |r| {
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
                        started: r.get::<_, Option<i64>>(11)?.map(Timestamp::from_nanos),
                        finished: r.get::<_, Option<i64>>(12)?.map(Timestamp::from_nanos),
                        files: r.get::<_, i64>(13)? as u64,
                        bytes: r.get::<_, i64>(14)? as u64,
                        total_files: r.get::<_, Option<i64>>(15)?.map(|n| n as u64),
                        total_bytes: r.get::<_, Option<i64>>(16)?.map(|n| n as u64),
                    },
                    (r.get::<_, Option<String>>(17)?, r.get::<_, i64>(18)? != 0),
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, path, stime, status, crawl, last_error, n, progress, (subvolume, arbiter)) =
                row.map_err(|e| self.err(e))?;
            out.push(BrickRecord {
                id: BrickId::new(id),
                session_id,
                brick: Brick::new(&path).map_err(|_| StateError::Corrupt {
                    column: "bricks.path",
                    value: path.clone(),
                })?,
                stime: stime.map(Stime::from_nanos),
                status: parse_display(&WorkerStatus::ALL, "bricks.status", &status)?,
                crawl: parse_display(&CrawlStatus::ALL, "bricks.crawl", &crawl)?,
                last_error,
                bytes_sent: n[0] as u64,
                entries: n[1] as u64,
                data: n[2] as u64,
                meta: n[3] as u64,
                failures: n[4] as u64,
                progress,
                subvolume,
                arbiter,
            });
        }
        Ok(out)
    }

    /// Records the GlusterFS subvolume (replica set) a brick belongs to,
    /// and whether it is an arbiter; `None` for a brick of no set.
    pub fn set_subvolume(
        &self,
        brick: BrickId,
        subvolume: Option<&str>,
        arbiter: bool,
    ) -> Result<(), StateError> {
        self.conn()
            .execute(
                "UPDATE bricks SET subvolume = ?2, arbiter = ?3 WHERE id = ?1",
                params![brick.row(), subvolume, arbiter],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn bricks_by_id(&self, id: BrickId) -> Result<Option<BrickRecord>, StateError> {
        let session: Option<i64> = self
            .conn()
            .query_row(
                "SELECT session_id FROM bricks WHERE id = ?1",
                params![id.row()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let Some(session) = session else {
            return Ok(None);
        };
        Ok(self
            .bricks(SessionId::new(session))?
            .into_iter()
            .find(|b| b.id == id))
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
                params![brick.row(), status.to_string(), crawl.to_string()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records a status together with why, in one statement, so a reader
    /// never sees `Faulty` next to the error of an earlier run (or none).
    pub fn set_worker_because(
        &self,
        brick: BrickId,
        status: WorkerStatus,
        crawl: CrawlStatus,
        why: Option<&str>,
    ) -> Result<(), StateError> {
        self.conn()
            .execute(
                "UPDATE bricks SET status = ?2, crawl = ?3, last_error = ?4 WHERE id = ?1",
                params![brick.row(), status.to_string(), crawl.to_string(), why],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Adds `brick` to a session (a brick added to its distributed volume
    /// while the session exists); it starts with no stime.
    pub fn add_brick(&self, session: SessionId, brick: &Brick) -> Result<BrickId, StateError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO bricks (session_id, path, status, crawl) VALUES (?1, ?2, 'Created', 'N/A')",
            params![session.row(), brick.path().to_string_lossy()],
        )
        .map_err(|e| self.err(e))?;
        Ok(BrickId::new(conn.last_insert_rowid()))
    }

    /// Sets or clears the last error shown for a brick.
    pub fn set_last_error(&self, brick: BrickId, error: Option<&str>) -> Result<(), StateError> {
        self.conn()
            .execute(
                "UPDATE bricks SET last_error = ?2 WHERE id = ?1",
                params![brick.row(), error],
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
                    brick.row(),
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
