//! The rows the state database hands out and takes in.

use crate::session::{Brick, BrickId, SessionId, SlaveUrl, Stime, Timestamp, VolumeName};

use super::{CrawlStatus, SessionState, WorkerStatus};

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
    pub id: SessionId,
    pub master_vol: VolumeName,
    pub slave: SlaveUrl,
    pub port: u16,
    pub host_key: String,
    pub config: String,
    pub state: SessionState,
    pub monitor_pid: Option<u32>,
    /// The operator's checkpoint: every change made before it should reach
    /// the slave.
    pub checkpoint: Option<Timestamp>,
    /// When every brick's stime was first seen at or past the checkpoint.
    pub checkpoint_completed: Option<Timestamp>,
}

/// A stored brick with its progress.
#[derive(Debug, Clone)]
pub struct BrickRecord {
    pub id: BrickId,
    pub session_id: SessionId,
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
    /// The GlusterFS subvolume the brick belongs to when it is a member of
    /// a replica set (e.g. `gv0-replicate-0`): the set's bricks share one
    /// stime, and one of them at a time is Active.
    pub subvolume: Option<String>,
    /// An arbiter brick holds names and metadata only: never Active.
    pub arbiter: bool,
}

/// The brick's latest Hybrid Crawl.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrawlProgress {
    pub started: Option<Timestamp>,
    /// `None` while it runs (or if it never ran).
    pub finished: Option<Timestamp>,
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
