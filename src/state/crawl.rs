//! The progress of each brick's latest Hybrid Crawl.

use rusqlite::params;

use super::*;

impl State {
    /// A Hybrid Crawl of `brick` begins: its progress starts from zero.
    /// Returns its start, which identifies it for [`State::crawl_total`].
    pub fn crawl_begin(&self, brick: BrickId) -> Result<Timestamp, StateError> {
        let started = Timestamp::now();
        self.conn()
            .execute(
                "UPDATE bricks SET crawl_started_ns = ?2, crawl_finished_ns = NULL, crawl_files = 0, crawl_bytes = 0,
                        crawl_total_files = NULL, crawl_total_bytes = NULL
                 WHERE id = ?1",
                params![brick.row(), started.nanos()],
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
        started: Timestamp,
        files: u64,
        bytes: u64,
    ) -> Result<(), StateError> {
        self.conn()
            .execute(
                "UPDATE bricks SET crawl_total_files = ?3, crawl_total_bytes = ?4
                 WHERE id = ?1 AND crawl_started_ns = ?2",
                params![brick.row(), started.nanos(), files as i64, bytes as i64],
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
                params![brick.row(), files as i64, bytes as i64],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn crawl_end(&self, brick: BrickId) -> Result<(), StateError> {
        self.conn()
            .execute(
                "UPDATE bricks SET crawl_finished_ns = ?2 WHERE id = ?1",
                params![brick.row(), Timestamp::now().nanos()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}
