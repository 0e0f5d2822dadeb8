//! A GlusterFS master volume as `gluster volume info VOL --xml` describes
//! it: its type, its subvolumes (replica or disperse sets) in brick order,
//! arbiter bricks, and the options that change what a brick holds.
//!
//! georep replicates a volume when the bricks it reads hold whole files
//! and, together, the whole volume as clients see it: one brick, one
//! replica set (whose Active member ships, see `monitor::sets`), or the
//! legs of a distribute volume (bricks or replica sets) merged into one
//! slave directory (`brick::volume`). A volume whose bricks hold anything
//! else (erasure-coded fragments, shard pieces) is refused by
//! [`Topology::unsupported`] until it is handled: a partial copy that says
//! it is healthy is never acceptable.
//!
//! Imports nothing of georep; `cli` asks it at `create` and `start`.

mod gluster;
mod xml;

use std::fmt;
use std::net::{IpAddr, ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};

pub use gluster::{
    all_volumes, brick_status, gluster_cli, gluster_present, heal_now, heal_summary,
    rebalance_status, volume_info,
};
pub use xml::{
    parse_brick_status, parse_heal_launched, parse_heal_summary, parse_rebalance_status,
    parse_volume_info,
};

/// Why a volume's description could not be had.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("running {cli} volume {question} {vol} --xml: {source}")]
    Spawn {
        cli: PathBuf,
        question: &'static str,
        vol: String,
        source: std::io::Error,
    },
    #[error("gluster volume {question} {vol}: {reason}")]
    Refused {
        question: &'static str,
        vol: String,
        reason: String,
    },
    #[error("gluster volume {question} {vol}: unreadable answer: {reason}")]
    Malformed {
        question: &'static str,
        vol: String,
        reason: String,
    },
    #[error("the volume topology recorded at create in {}: {reason}", .path.display())]
    Recorded { path: PathBuf, reason: String },
}

impl VolumeError {
    /// GlusterFS answered that the volume does not exist: the name is not
    /// a GlusterFS volume (plain `--brick` directories may use any name).
    pub fn is_missing_volume(&self) -> bool {
        matches!(self, VolumeError::Refused { reason, .. } if reason.contains("does not exist"))
    }
}

/// One brick as the volume lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BrickSpec {
    pub host: String,
    pub path: PathBuf,
    /// An arbiter brick holds names and metadata, never file content.
    pub arbiter: bool,
}

impl fmt::Display for BrickSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.path.display())?;
        if self.arbiter {
            f.write_str(" (arbiter)")?;
        }
        Ok(())
    }
}

/// A brick as `gluster volume status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrickState {
    pub host: String,
    pub path: PathBuf,
    /// Its brick process (glusterfsd) runs.
    pub online: bool,
}

/// What a replica brick holds that another member of its set lacks, as
/// `gluster volume heal VOL info summary` reports it: the entries its
/// index lists for healing (the replicate layer records them on the
/// members a change reached, for the members it missed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealState {
    pub host: String,
    pub path: PathBuf,
    /// Entries waiting for a heal from this brick, or in split-brain;
    /// `None` when the brick could not be asked (not connected).
    pub pending: Option<u64>,
}

/// A volume's latest rebalance, as `gluster volume rebalance VOL status`
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebalance {
    /// GlusterFS's id of the rebalance task: a new one for each `start`.
    pub task: String,
    /// It is migrating files (or fixing the layout) now.
    pub running: bool,
    /// GlusterFS's words for its state (`in progress`, `completed`, …).
    pub status: String,
}

/// How the bricks of one subvolume relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SetKind {
    /// A plain distribute leg: one brick.
    Single,
    /// Every brick holds the whole subvolume (arbiters hold no content).
    Replica,
    /// Each brick holds erasure-coded fragments; `redundancy` may be lost.
    Disperse { redundancy: u32 },
}

/// One distribute leg of the volume: a brick, or a replica or disperse set.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Subvolume {
    pub kind: SetKind,
    pub bricks: Vec<BrickSpec>,
    /// GlusterFS's name for it in the client graph: `VOL-replicate-N`,
    /// `VOL-disperse-N`, or `VOL-client-N` for a plain brick.
    pub name: String,
}

/// A volume's shape, as far as replicating it is concerned. A session of
/// a GlusterFS volume records it at `create` ([`Topology::save`]) and
/// compares it with the volume's at `start` and while it runs
/// ([`Topology::changes_since`]): a volume changed by `add-brick`,
/// `remove-brick` or `replace-brick` is never copied as if it had not.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Topology {
    pub name: String,
    /// GlusterFS's own name for the type (`Distribute`, `Replicate`,
    /// `Distributed-Disperse`, …), shown in errors as the user knows it.
    pub type_name: String,
    /// `Started`, `Created`, `Stopped`.
    pub status: String,
    pub subvolumes: Vec<Subvolume>,
    /// `features.shard on`: files are cut into `.shard/` pieces on the bricks.
    pub sharded: bool,
}

impl Topology {
    /// What changed in the volume since `recorded` was taken, in words
    /// (bricks added or removed, the type, the sets, sharding); `None` if
    /// its shape is the same (whether it is started does not count).
    pub fn changes_since(&self, recorded: &Topology) -> Option<String> {
        let listed = |t: &Topology| t.bricks().map(|b| b.to_string()).collect::<Vec<_>>();
        let (now, then) = (listed(self), listed(recorded));
        let mut changes = Vec::new();
        if self.type_name != recorded.type_name {
            changes.push(format!(
                "its type went from {} to {}",
                recorded.type_name, self.type_name
            ));
        }
        for (what, these, others) in [("added", &now, &then), ("removed", &then, &now)] {
            let only: Vec<&str> = these
                .iter()
                .filter(|b| !others.contains(b))
                .map(|b| b.as_str())
                .collect();
            if !only.is_empty() {
                changes.push(format!("brick(s) {what}: {}", only.join(", ")));
            }
        }
        if changes.is_empty() && self.subvolumes != recorded.subvolumes {
            changes.push("its bricks were regrouped into other subvolumes".to_owned());
        }
        if self.sharded != recorded.sharded {
            changes.push(format!(
                "features.shard was turned {}",
                if self.sharded { "on" } else { "off" }
            ));
        }
        (!changes.is_empty()).then(|| {
            format!(
                "volume {} changed since the session was created: {}",
                self.name,
                changes.join("; ")
            )
        })
    }

    /// The bricks added to a plain distribute volume since `recorded`,
    /// when that is its only change (every recorded brick still there, no
    /// sets, no sharding): such a change georep follows, since DHT only
    /// spreads the same namespace over more bricks. `None` otherwise.
    pub fn added_bricks(&self, recorded: &Topology) -> Option<Vec<BrickSpec>> {
        let kept = recorded.bricks().all(|r| self.bricks().any(|b| b == r));
        if !kept || !self.plain_distribute() || self.sharded || recorded.sharded {
            return None;
        }
        let added: Vec<BrickSpec> = self
            .bricks()
            .filter(|b| !recorded.bricks().any(|r| r == *b))
            .cloned()
            .collect();
        (!added.is_empty()).then_some(added)
    }

    /// Writes the topology to `path` (JSON).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, json)
    }

    /// The topology saved at `path`; `None` if there is none (a session of
    /// plain directories, or created before topologies were recorded).
    pub fn load(path: &Path) -> Result<Option<Topology>, VolumeError> {
        let unreadable = |reason: String| VolumeError::Recorded {
            path: path.to_owned(),
            reason,
        };
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| unreadable(e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(unreadable(e.to_string())),
        }
    }

    pub fn bricks(&self) -> impl Iterator<Item = &BrickSpec> {
        self.subvolumes.iter().flat_map(|s| s.bricks.iter())
    }

    /// The subvolume that lists a brick at `path`.
    pub fn subvolume_of(&self, path: &std::path::Path) -> Option<&Subvolume> {
        self.subvolumes
            .iter()
            .find(|s| s.bricks.iter().any(|b| b.path == path))
    }

    /// Whether every subvolume is one plain brick (a distribute volume,
    /// or a single brick).
    pub fn plain_distribute(&self) -> bool {
        self.subvolumes.iter().all(|s| s.bricks.len() == 1)
    }

    /// Why georep cannot replicate this volume yet, naming its type and
    /// what is missing; `None` for a single brick, replica sets (with or
    /// without an arbiter) and distribute over bricks or replica sets
    /// (whose legs' listings `brick::volume` merges), without sharding.
    pub fn unsupported(&self) -> Option<String> {
        let mut missing = Vec::new();
        let sets = |kind: fn(&SetKind) -> bool| {
            self.subvolumes
                .iter()
                .any(|s| kind(&s.kind) && s.bricks.len() > 1)
        };
        if sets(|k| matches!(k, SetKind::Disperse { .. })) {
            missing.push(
                "disperse sets: bricks hold erasure-coded fragments, content must be read through a client mount"
                    .to_owned(),
            );
        }
        if self.sharded {
            missing.push(
                "features.shard: bricks hold .shard pieces, content must be read through a client mount"
                    .to_owned(),
            );
        }
        if missing.is_empty() {
            return None;
        }
        Some(format!(
            "volume {} is {} with {} brick(s) ({}); georep replicates only volumes of whole-file bricks (a single brick, replica sets, distribute over bricks or replica sets) yet, and does not handle: {}",
            self.name,
            self.type_name,
            self.bricks().count(),
            self.bricks()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            missing.join("; ")
        ))
    }
}

/// A host names this machine when it is its host name, or resolves to an
/// address this machine can bind.
pub fn is_local(host: &str) -> bool {
    if hostname::get().is_ok_and(|h| h == host) {
        return true;
    }
    let Ok(addrs) = (host, 0).to_socket_addrs() else {
        return false;
    };
    addrs.into_iter().any(|a| bindable(a.ip()))
}

fn bindable(ip: IpAddr) -> bool {
    UdpSocket::bind((ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_local_and_a_foreign_address_is_not() {
        assert!(is_local("127.0.0.1"));
        assert!(!is_local("192.0.2.1"));
        assert!(!is_local("no-such-host.invalid"));
    }

    fn fixture(name: &str) -> Topology {
        let xml = match name {
            "dv" => include_str!("testdata/dv.xml"),
            "rv" => include_str!("testdata/rv.xml"),
            "r2" => include_str!("testdata/r2.xml"),
            "ev" => include_str!("testdata/ev.xml"),
            "sv" => include_str!("testdata/sv.xml"),
            _ => unreachable!("no fixture {name}"),
        };
        parse_volume_info(name, xml).unwrap()
    }

    #[test]
    fn a_plain_distributed_volume_is_handled_and_a_sharded_one_is_not() {
        let mut t = fixture("dv");
        assert_eq!(t.type_name, "Distribute");
        assert_eq!(t.subvolumes.len(), 2);
        assert!(t.plain_distribute());
        assert_eq!(t.unsupported(), None);
        t.sharded = true;
        let why = t.unsupported().unwrap();
        assert!(
            why.contains("volume dv is Distribute with 2 brick(s)"),
            "{why}"
        );
        assert!(why.contains("features.shard"), "{why}");
    }

    #[test]
    fn an_arbiter_replica_is_one_set_and_accepted() {
        let t = fixture("rv");
        assert_eq!(t.subvolumes.len(), 1);
        assert_eq!(t.subvolumes[0].kind, SetKind::Replica);
        assert_eq!(t.subvolumes[0].name, "rv-replicate-0");
        let arbiters: Vec<bool> = t.bricks().map(|b| b.arbiter).collect();
        assert_eq!(arbiters, [false, false, true]);
        assert_eq!(t.unsupported(), None);
        let set = t.subvolume_of(std::path::Path::new("/tmp/gx/r3")).unwrap();
        assert_eq!(set.name, "rv-replicate-0");
    }

    #[test]
    fn a_distributed_replica_groups_bricks_in_order() {
        let t = fixture("r2");
        let sets: Vec<Vec<String>> = t
            .subvolumes
            .iter()
            .map(|s| {
                s.bricks
                    .iter()
                    .map(|b| b.path.display().to_string())
                    .collect()
            })
            .collect();
        assert_eq!(
            sets,
            [["/tmp/gx/q1", "/tmp/gx/q2"], ["/tmp/gx/q3", "/tmp/gx/q4"]]
        );
        let names: Vec<&str> = t.subvolumes.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["r2-replicate-0", "r2-replicate-1"]);
        assert_eq!(t.unsupported(), None, "distribute over replica sets");
    }

    #[test]
    fn a_change_of_bricks_type_or_sharding_is_named_and_a_restart_is_not() {
        let then = fixture("dv");
        let mut now = then.clone();
        now.status = "Stopped".into();
        assert_eq!(now.changes_since(&then), None);
        now.subvolumes.push(Subvolume {
            kind: SetKind::Single,
            bricks: vec![BrickSpec {
                host: "vm".into(),
                path: "/tmp/gx/d3".into(),
                arbiter: false,
            }],
            name: "dv-client-2".into(),
        });
        now.subvolumes.remove(0);
        now.sharded = true;
        let why = now.changes_since(&then).unwrap();
        assert!(
            why.contains("volume dv changed since the session was created"),
            "{why}"
        );
        assert!(why.contains("brick(s) added: vm:/tmp/gx/d3"), "{why}");
        assert!(why.contains("brick(s) removed: "), "{why}");
        assert!(why.contains("features.shard was turned on"), "{why}");
        assert_eq!(now.added_bricks(&then), None, "a brick went");
        let mut grown = then.clone();
        grown.subvolumes.push(now.subvolumes[1].clone());
        let added: Vec<String> = grown
            .added_bricks(&then)
            .unwrap()
            .iter()
            .map(|b| b.to_string())
            .collect();
        assert_eq!(added, ["vm:/tmp/gx/d3"]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topology.json");
        assert_eq!(Topology::load(&path).unwrap(), None);
        then.save(&path).unwrap();
        assert_eq!(Topology::load(&path).unwrap(), Some(then));
    }

    #[test]
    fn a_dispersed_volume_is_refused() {
        let t = fixture("ev");
        assert_eq!(t.subvolumes.len(), 1);
        assert_eq!(t.subvolumes[0].kind, SetKind::Disperse { redundancy: 1 });
        assert_eq!(t.subvolumes[0].name, "ev-disperse-0");
        assert!(t.unsupported().unwrap().contains("erasure-coded"));
    }

    #[test]
    fn a_sharded_single_brick_is_refused_and_a_plain_one_is_not() {
        let mut t = fixture("sv");
        assert!(t.sharded);
        assert_eq!(t.bricks().count(), 1);
        assert!(t.unsupported().unwrap().contains("features.shard"));
        t.sharded = false;
        assert_eq!(t.unsupported(), None);
    }
}
