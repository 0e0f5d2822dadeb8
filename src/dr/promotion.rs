//! The promotion record of a DR directory, kept in the DR host's
//! `GEOREP_HOME` under `promoted/<id>/` (`id`: a hash of the directory's
//! real path), beside the journal of the changes made there since.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::session::{Stime, Timestamp};
use crate::slave::commits::BrickStime;

/// Why a promotion record cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PromotionError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a promotion record: {source}")]
    Format {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// How far one brick of the old master had got, by the commits the DR
/// directory received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionPoint {
    /// `<node>:<brick path>` of the old master.
    pub brick: String,
    /// Its stime (ns): every change it made before is at DR.
    pub stime_ns: i64,
}

/// What `promote` recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Promotion {
    /// The DR directory, real path.
    pub dir: PathBuf,
    /// When it was promoted (ns since the epoch).
    pub promoted_at_ns: i64,
    /// One entry per brick that ever committed to it.
    pub points: Vec<PromotionPoint>,
}

impl Promotion {
    pub fn new(dir: PathBuf, at: Timestamp, stimes: &[BrickStime]) -> Self {
        Promotion {
            dir,
            promoted_at_ns: at.nanos(),
            points: stimes
                .iter()
                .map(|s| PromotionPoint {
                    brick: s.brick.clone(),
                    stime_ns: s.stime,
                })
                .collect(),
        }
    }

    pub fn promoted_at(&self) -> Timestamp {
        Timestamp::from_nanos(self.promoted_at_ns)
    }

    pub fn stime(point: &PromotionPoint) -> Stime {
        Stime::from_nanos(point.stime_ns)
    }
}

/// Where a DR directory's promotion lives under a home.
#[derive(Debug, Clone)]
pub struct PromotedDir {
    base: PathBuf,
}

impl PromotedDir {
    /// The place for the directory whose real path is `dir`.
    pub fn of(home: &Path, dir: &Path) -> Self {
        let hash = blake3::hash(dir.as_os_str().as_encoded_bytes());
        let id: String = hash.as_bytes()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        PromotedDir {
            base: Self::all(home).join(id),
        }
    }

    /// The folder holding every promoted directory's place.
    pub fn all(home: &Path) -> PathBuf {
        home.join("promoted")
    }

    pub fn at(base: PathBuf) -> Self {
        PromotedDir { base }
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    pub fn record_path(&self) -> PathBuf {
        self.base.join("promotion.json")
    }

    /// Where the hook journals the changes made at DR.
    pub fn journal_dir(&self) -> PathBuf {
        self.base.join("journal")
    }

    /// The running journal process: its pid, written once its watch is in
    /// place.
    pub fn journal_pid(&self) -> PathBuf {
        self.base.join("journal.pid")
    }

    /// When the journal process last closed its current file on request
    /// (SIGUSR1), in ns: everything changed before is in closed files.
    pub fn journal_rolled(&self) -> PathBuf {
        self.base.join("journal.rolled")
    }

    pub fn journal_log(&self) -> PathBuf {
        self.base.join("journal.log")
    }

    /// The record, if this directory was promoted.
    pub fn load(&self) -> Result<Option<Promotion>, PromotionError> {
        let path = self.record_path();
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(PromotionError::Io { path, source }),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|source| PromotionError::Format { path, source })
    }

    /// Writes the record durably (temp file, fsync, rename).
    pub fn save(&self, p: &Promotion) -> Result<(), PromotionError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| PromotionError::Io { path, source }
        };
        crate::fsutil::create_private_dir(&self.base).map_err(io(&self.base))?;
        let path = self.record_path();
        let text = serde_json::to_vec_pretty(p).map_err(|source| PromotionError::Format {
            path: path.clone(),
            source,
        })?;
        crate::fsutil::write_private_file(&path, &text).map_err(io(&path))?;
        std::fs::File::open(&self.base)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.base))
    }

    /// The pid of the journal process, if one said it was ready.
    pub fn journal_pid_value(&self) -> Option<u32> {
        std::fs::read_to_string(self.journal_pid())
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_and_each_directory_has_its_place() {
        let home = tempfile::tempdir().unwrap();
        let place = PromotedDir::of(home.path(), Path::new("/srv/dr/gv0"));
        assert_ne!(
            place.base(),
            PromotedDir::of(home.path(), Path::new("/srv/dr/gv1")).base()
        );
        assert!(place.load().unwrap().is_none());
        let p = Promotion::new(
            "/srv/dr/gv0".into(),
            Timestamp::from_secs(5),
            &[BrickStime {
                brick: "n:/b".into(),
                stime: 3,
            }],
        );
        place.save(&p).unwrap();
        assert_eq!(place.load().unwrap(), Some(p));
    }
}
