//! The meta-volume: a GlusterFS volume every master node mounts at the
//! same path, where the nodes of one session meet. georep uses GlusterFS's
//! own shared storage (`gluster volume set all
//! cluster.enable-shared-storage enable` makes the replicated volume
//! `gluster_shared_storage` and mounts it on every node of the pool at
//! [`DEFAULT_MOUNT`]), as GlusterFS's geo-replication does with
//! `use_meta_volume`.
//!
//! A session is one directory there, named after the master volume and the
//! slave, so the nodes find it without sharing their (per-node) session
//! ids:
//!
//! ```text
//! <mount>/georep/<vol>--<slave host>--<hash of the slave URL>/
//!     sets/<subvolume>.lock   the election of each replica set: an
//!                             exclusive flock, held by the Active worker,
//!                             excludes every other node's (GlusterFS's
//!                             locks translator); released when the
//!                             holder's monitor or node dies
//!     sets/<subvolume>.epoch.<node>
//!                             the last grant of the set's fencing epoch
//!                             on each node, raised by each new Active
//!                             (see [`epoch`])
//!     nodes/<node>.json       each node's status rows, rewritten every
//!                             PUBLISH_EVERY by its monitor
//! ```
//!
//! A node's rows are as fresh as its last report: `status` on any node
//! shows a node whose running monitor has not reported for
//! [`OFFLINE_AFTER`] as `Offline` with the time it was last seen, never
//! the role it had then. The reports carry the publisher's clock; the
//! nodes of a GlusterFS pool are expected to keep theirs in step (NTP),
//! as GlusterFS's own geo-replication expects.
//!
//! Imports `session` only.

pub mod epoch;
pub mod registry;
pub mod write;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::session::{SlaveUrl, Timestamp, VolumeName};

/// Where GlusterFS's shared-storage hook mounts `gluster_shared_storage`.
pub const DEFAULT_MOUNT: &str = "/run/gluster/shared_storage";

/// How often a running monitor rewrites its node's report.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(2);

/// A running node not heard of for this long is shown `Offline`.
pub const OFFLINE_AFTER: Duration = Duration::from_secs(6);

/// Why the meta-volume could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("meta-volume {path}: {source}")]
pub struct MetaError {
    path: PathBuf,
    source: std::io::Error,
}

fn err(path: &Path) -> impl FnOnce(std::io::Error) -> MetaError + '_ {
    move |source| MetaError {
        path: path.to_owned(),
        source,
    }
}

/// The meta-volume, mounted at `root`.
#[derive(Debug, Clone)]
pub struct MetaVolume {
    root: PathBuf,
}

impl MetaVolume {
    /// The meta-volume if something is mounted at `at` (a mount point: on
    /// another device than its parent); `None` on a node without one,
    /// where a session stays this node's alone.
    pub fn mounted_at(at: &Path) -> Option<MetaVolume> {
        use std::os::unix::fs::MetadataExt;
        let here = std::fs::metadata(at).ok()?;
        let parent = std::fs::metadata(at.parent()?).ok()?;
        (here.is_dir() && here.dev() != parent.dev()).then(|| MetaVolume {
            root: at.to_owned(),
        })
    }

    /// The directory of the session from `vol` to `slave`.
    pub fn session(&self, vol: &VolumeName, slave: &SlaveUrl) -> SessionMeta {
        let url = format!("{}@{}::{}", slave.user, slave.host, slave.volume);
        let hash = blake3::hash(url.as_bytes()).to_hex();
        SessionMeta {
            dir: self
                .root
                .join("georep")
                .join(format!("{vol}--{}--{}", slave.host, &hash[..16])),
        }
    }
}

/// One session's directory on the meta-volume.
#[derive(Debug, Clone)]
pub struct SessionMeta {
    dir: PathBuf,
}

/// What a node last said about its bricks of a session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeReport {
    /// The node's host name (MASTER NODE).
    pub node: String,
    /// When it was written, on the node's clock.
    pub seen: i64,
    /// Written by a running monitor, which rewrites it every
    /// [`PUBLISH_EVERY`]; false for the last report of a monitor that
    /// stopped (its rows stay true until the next start).
    pub live: bool,
    /// The node's `status --json` rows, one per brick.
    pub rows: Vec<serde_json::Value>,
}

impl NodeReport {
    /// When it was written.
    pub fn seen(&self) -> Timestamp {
        Timestamp::from_nanos(self.seen)
    }

    /// A running node that has not reported for [`OFFLINE_AFTER`].
    pub fn offline(&self, now: Timestamp) -> bool {
        self.live && now.seconds_since(self.seen()) > OFFLINE_AFTER.as_secs_f64()
    }
}

impl SessionMeta {
    /// Where the replica sets' election locks are.
    pub fn sets_dir(&self) -> PathBuf {
        self.dir.join("sets")
    }

    fn nodes_dir(&self) -> PathBuf {
        self.dir.join("nodes")
    }

    /// Replaces this node's report, in place (see [`write`]: a reader may
    /// find it torn, and skips it).
    pub fn publish(&self, report: &NodeReport) -> Result<(), MetaError> {
        let path = self.nodes_dir().join(format!("{}.json", report.node));
        let text = serde_json::to_vec(report).map_err(|e| MetaError {
            path: path.clone(),
            source: e.into(),
        })?;
        write::rewrite(&path, &text).map_err(err(&path))
    }

    /// Removes `node`'s report (its session was deleted there).
    pub fn withdraw(&self, node: &str) -> Result<(), MetaError> {
        let path = self.nodes_dir().join(format!("{node}.json"));
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(err(&path)(e)),
            _ => Ok(()),
        }
    }

    /// Every node's report but `own`'s, by node name. A report that cannot
    /// be read (being replaced, or torn by a node that died mid-write) is
    /// left out: its node then shows no rows until its next report.
    pub fn reports(&self, own: &str) -> Result<Vec<NodeReport>, MetaError> {
        let dir = self.nodes_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(err(&dir)(e)),
        };
        let mut out: Vec<NodeReport> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<NodeReport>(&b).ok())
            .filter(|r| r.node != own)
            .collect();
        out.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_node_is_offline_once_it_misses_its_reports() {
        let now = Timestamp::now();
        let report = |age: Duration, live| NodeReport {
            node: "node1".into(),
            seen: now.nanos() - age.as_nanos() as i64,
            live,
            rows: Vec::new(),
        };
        assert!(!report(PUBLISH_EVERY, true).offline(now));
        assert!(report(OFFLINE_AFTER + Duration::from_secs(1), true).offline(now));
        // A stopped monitor's last word stays true.
        assert!(!report(Duration::from_secs(3600), false).offline(now));
    }

    #[test]
    fn reports_are_read_back_without_the_readers_own() {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaVolume {
            root: dir.path().to_owned(),
        };
        let vol: VolumeName = "gv0".parse().unwrap();
        let s = meta.session(&vol, &"root@dr::/srv/dr".parse().unwrap());
        let other = meta.session(&vol, &"root@dr::/srv/other".parse().unwrap());
        assert_ne!(s.sets_dir(), other.sets_dir());
        for node in ["node1", "node2"] {
            s.publish(&NodeReport {
                node: node.into(),
                seen: 1,
                live: true,
                rows: vec![serde_json::json!({ "master_node": node })],
            })
            .unwrap();
        }
        // A torn report is skipped, not an error.
        std::fs::write(s.nodes_dir().join("node3.json"), b"{\"node\":").unwrap();
        let got = s.reports("node2").unwrap();
        assert_eq!(got.len(), 1);
        s.withdraw("node2").unwrap();
        assert_eq!(s.reports("node3").unwrap().len(), 1, "node2's is gone");
        assert_eq!(got[0].node, "node1");
        assert_eq!(got[0].rows[0]["master_node"], "node1");
        assert!(other.reports("node2").unwrap().is_empty());
        assert!(MetaVolume::mounted_at(dir.path()).is_none());
    }
}
