//! The status words stored for sessions and workers, as GlusterFS spells them.

use std::fmt;
use std::str::FromStr;

use super::StateError;

/// The operator's intent for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    Created,
    Started,
    Paused,
    Stopped,
}

impl SessionState {
    pub(super) fn as_str(self) -> &'static str {
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

pub(super) fn parse_display<T: fmt::Display + Copy>(
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
