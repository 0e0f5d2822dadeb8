//! The cluster-wide definition of a session, on the meta-volume: what
//! `create`, `start`, `stop`, `pause`, `resume`, `config` and `delete` ask
//! of every master node, written by the command on whichever node ran it,
//! and each node's public session key, published by that node. GlusterFS's
//! geo-replication gets the same effect through glusterd, which passes a
//! command to every peer; georep's nodes meet on the meta-volume instead,
//! so a node that is down when a command runs finds the latest word there
//! when it comes back (its agent, `geo-rep agent`, applies it).
//!
//! ```text
//! <session dir>/session.<generation>.json
//!                              the definition: desired state, settings,
//!                              generation (one more at every change)
//!               session.lock   flock held while the definition is
//!                              rewritten, so two nodes' commands never
//!                              lose each other's change
//!               keys/<node>.json   the node's public session key and the
//!                              brick host names it answers for
//! ```
//!
//! Each generation is a file of its own, the older ones removed once it is
//! written, and a reader lists the directory for the newest: a GlusterFS
//! client caches a small file's content and a name's inode for a moment,
//! so a file rewritten in place, or replaced by a rename, could be read
//! as it was on another node; a name never used before cannot be.
//!
//! A deleted session keeps its definition as a tombstone (`Deleted`), so a
//! node that was down at `delete` still deletes its share; a later
//! `create` replaces it with a new incarnation (a new `uid`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{err, MetaError, MetaVolume, SessionMeta};
use crate::session::{SlaveUrl, VolumeName};

/// What the session should be doing on every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    /// Set up, never started.
    Created,
    Started,
    Paused,
    Stopped,
    /// Gone: every node deletes its share.
    Deleted,
}

impl std::fmt::Display for Desired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Desired::Created => "created",
            Desired::Started => "started",
            Desired::Paused => "paused",
            Desired::Stopped => "stopped",
            Desired::Deleted => "deleted",
        };
        f.write_str(s)
    }
}

/// One session as every node of the volume should have it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Definition {
    /// This incarnation of the session (a re-created session has another).
    pub uid: String,
    /// One more at every change, so a node applies each change once.
    pub generation: u64,
    pub vol: String,
    pub slave: String,
    pub desired: Desired,
    /// Every node's key is on the slave: the nodes may set up their share.
    pub installed: bool,
    /// The slave's host key, as `create` pinned it (OpenSSH form).
    pub host_key: String,
    /// The session's settings (`SessionConfig` as JSON).
    pub config: String,
    /// The checkpoint, in nanoseconds, if one is set.
    #[serde(default)]
    pub checkpoint: Option<i64>,
    /// The slave directory held data at `create`: the nodes resume from
    /// the stimes a deleted session kept.
    pub slave_had_data: bool,
    /// `delete reset-sync-time`: the nodes drop the kept stimes.
    #[serde(default)]
    pub reset_sync_time: bool,
    /// The node whose command wrote this generation.
    pub by: String,
}

/// A node's public key for one session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeKey {
    /// The node's host name.
    pub node: String,
    /// The brick host names of the volume that are this node.
    pub hosts: Vec<String>,
    /// `ssh-ed25519 AAAA… comment`.
    pub public: String,
    /// The incarnation it was made for.
    pub uid: String,
}

impl MetaVolume {
    /// Every session directory on the meta-volume that holds a definition.
    pub fn sessions(&self) -> Result<Vec<SessionMeta>, MetaError> {
        let mut out: Vec<SessionMeta> = entries(&self.root.join("georep"))?
            .into_iter()
            .map(|e| SessionMeta { dir: e.path() })
            .filter(|s| s.newest().is_ok_and(|g| g.is_some()))
            .collect();
        out.sort_by(|a, b| a.dir.cmp(&b.dir));
        Ok(out)
    }
}

impl SessionMeta {
    fn definition_path(&self, generation: u64) -> PathBuf {
        self.dir.join(format!("session.{generation}.json"))
    }

    /// The generations of the definition on file, listed afresh.
    fn generations(&self) -> Result<Vec<u64>, MetaError> {
        Ok(entries(&self.dir)?
            .into_iter()
            .filter_map(|e| {
                let name = e.file_name();
                let name = name.to_str()?;
                name.strip_prefix("session.")?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()
            })
            .collect())
    }

    fn newest(&self) -> Result<Option<u64>, MetaError> {
        Ok(self.generations()?.into_iter().max())
    }

    fn keys_dir(&self) -> PathBuf {
        self.dir.join("keys")
    }

    /// The directory's name: unique to the master volume and the slave.
    pub fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The session's definition, if a cluster-wide one was ever made.
    pub fn definition(&self) -> Result<Option<Definition>, MetaError> {
        // A newer generation may remove the one listed before it is read:
        // list again.
        let mut tries = 0;
        loop {
            let Some(g) = self.newest()? else {
                return Ok(None);
            };
            let path = self.definition_path(g);
            match std::fs::read(&path) {
                Ok(b) => {
                    return serde_json::from_slice(&b)
                        .map(Some)
                        .map_err(|e| err(&path)(e.into()))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 5 => tries += 1,
                Err(e) => return Err(err(&path)(e)),
            }
        }
    }

    /// The definition of a live (not deleted) session.
    pub fn live_definition(&self) -> Result<Option<Definition>, MetaError> {
        Ok(self.definition()?.filter(|d| d.desired != Desired::Deleted))
    }

    /// Changes the definition under the session's lock: `change` gets the
    /// current one (if any) and returns the new one or an error; the new
    /// one is written with the next generation, atomically.
    pub fn update<E: From<MetaError>>(
        &self,
        change: impl FnOnce(Option<Definition>) -> Result<Definition, E>,
    ) -> Result<Definition, E> {
        crate::fsutil::create_private_dir(&self.dir).map_err(err(&self.dir))?;
        let lock_path = self.dir.join("session.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(err(&lock_path))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| err(&lock_path)(e.into()))?;
        let old = self.definition()?;
        let next = old.as_ref().map_or(0, |d| d.generation) + 1;
        let mut new = change(old)?;
        new.generation = next;
        let path = self.definition_path(next);
        let text = serde_json::to_vec_pretty(&new).map_err(|e| err(&path)(e.into()))?;
        crate::fsutil::write_private_file(&path, &text).map_err(err(&path))?;
        self.remove_generations(|g| g < next)?;
        Ok(new)
    }

    /// Publishes this node's key (replacing its earlier one).
    pub fn publish_key(&self, key: &NodeKey) -> Result<(), MetaError> {
        let dir = self.keys_dir();
        crate::fsutil::create_private_dir(&dir).map_err(err(&dir))?;
        let path = dir.join(format!("{}.json", key.node));
        let text = serde_json::to_vec(key).map_err(|e| err(&path)(e.into()))?;
        crate::fsutil::write_private_file(&path, &text).map_err(err(&path))
    }

    /// The keys published for incarnation `uid`, by node name.
    pub fn keys(&self, uid: &str) -> Result<Vec<NodeKey>, MetaError> {
        let mut out: Vec<NodeKey> = entries(&self.keys_dir())?
            .into_iter()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<NodeKey>(&b).ok())
            .filter(|k| k.uid == uid)
            .collect();
        out.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(out)
    }

    /// Removes every published key (the session is being deleted, or its
    /// creation failed).
    pub fn remove_keys(&self) -> Result<(), MetaError> {
        remove_all(&self.keys_dir())
    }

    /// Removes the definition and the keys: a `create` that failed leaves
    /// nothing behind.
    pub fn remove_definition(&self) -> Result<(), MetaError> {
        self.remove_keys()?;
        self.remove_generations(|_| true)
    }

    fn remove_generations(&self, which: impl Fn(u64) -> bool) -> Result<(), MetaError> {
        for g in self.generations()?.into_iter().filter(|g| which(*g)) {
            let path = self.definition_path(g);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(&path)(e)),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Whether `def` names the session from `vol` to `slave`.
pub fn names(def: &Definition, vol: &VolumeName, slave: &SlaveUrl) -> bool {
    def.vol == vol.as_str() && def.slave == slave.to_string()
}

/// The entries of `dir` (none if it does not exist).
fn entries(dir: &Path) -> Result<Vec<std::fs::DirEntry>, MetaError> {
    match std::fs::read_dir(dir) {
        Ok(e) => Ok(e.flatten().collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(err(dir)(e)),
    }
}

fn remove_all(dir: &Path) -> Result<(), MetaError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(err(dir)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(uid: &str) -> Definition {
        Definition {
            uid: uid.into(),
            generation: 0,
            vol: "gv0".into(),
            slave: "root@dr::/srv/dr".into(),
            desired: Desired::Created,
            installed: false,
            host_key: String::new(),
            config: "{}".into(),
            checkpoint: None,
            slave_had_data: false,
            reset_sync_time: false,
            by: "node1".into(),
        }
    }

    #[test]
    fn each_update_is_one_generation_more_and_keys_belong_to_an_incarnation() {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaVolume {
            root: dir.path().to_owned(),
        };
        let vol: VolumeName = "gv0".parse().unwrap();
        let slave: SlaveUrl = "root@dr::/srv/dr".parse().unwrap();
        let s = meta.session(&vol, &slave);
        assert!(s.definition().unwrap().is_none());
        assert!(meta.sessions().unwrap().is_empty());
        let d = s
            .update(|old| {
                assert!(old.is_none());
                Ok::<_, MetaError>(definition("a"))
            })
            .unwrap();
        assert_eq!(d.generation, 1);
        assert!(names(&d, &vol, &slave));
        let d = s
            .update(|old| {
                let mut d = old.unwrap();
                d.desired = Desired::Started;
                Ok::<_, MetaError>(d)
            })
            .unwrap();
        assert_eq!((d.generation, d.desired), (2, Desired::Started));
        assert_eq!(s.generations().unwrap(), [2], "each generation a new file");
        assert_eq!(s.live_definition().unwrap().unwrap().generation, 2);
        assert_eq!(meta.sessions().unwrap().len(), 1);
        for (node, uid) in [("node1", "a"), ("node2", "old")] {
            s.publish_key(&NodeKey {
                node: node.into(),
                hosts: vec![node.into()],
                public: "ssh-ed25519 AAAA".into(),
                uid: uid.into(),
            })
            .unwrap();
        }
        let keys = s.keys("a").unwrap();
        assert_eq!(
            keys.len(),
            1,
            "a key of another incarnation is not this one's"
        );
        assert_eq!(keys[0].node, "node1");
        s.update(|old| {
            let mut d = old.unwrap();
            d.desired = Desired::Deleted;
            Ok::<_, MetaError>(d)
        })
        .unwrap();
        assert!(s.live_definition().unwrap().is_none());
        assert!(s.definition().unwrap().is_some(), "a tombstone stays");
        s.remove_definition().unwrap();
        assert!(s.keys("a").unwrap().is_empty());
        assert!(meta.sessions().unwrap().is_empty());
    }
}
