//! A GlusterFS master volume as `gluster volume info VOL --xml` describes
//! it: its type, its subvolumes (replica or disperse sets) in brick order,
//! arbiter bricks, and the options that change what a brick holds.
//!
//! georep replicates a volume whose every brick it reads holds the whole
//! volume as clients see it: one brick, or one replica set (whose Active
//! member ships, see `monitor::sets`). A volume whose bricks hold anything
//! else (parts of the namespace, erasure-coded fragments, shard pieces) is
//! refused by [`Topology::unsupported`] until it is handled: a partial copy
//! that says it is healthy is never acceptable.
//!
//! Imports nothing of georep; `cli` asks it at `create` and `start`.

mod gluster;
mod xml;

use std::fmt;
use std::path::PathBuf;

pub use gluster::{all_volumes, brick_status, gluster_cli, gluster_present, volume_info};
pub use xml::{parse_brick_status, parse_volume_info};

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
}

impl VolumeError {
    /// GlusterFS answered that the volume does not exist: the name is not
    /// a GlusterFS volume (plain `--brick` directories may use any name).
    pub fn is_missing_volume(&self) -> bool {
        matches!(self, VolumeError::Refused { reason, .. } if reason.contains("does not exist"))
    }
}

/// One brick as the volume lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// How the bricks of one subvolume relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKind {
    /// A plain distribute leg: one brick.
    Single,
    /// Every brick holds the whole subvolume (arbiters hold no content).
    Replica,
    /// Each brick holds erasure-coded fragments; `redundancy` may be lost.
    Disperse { redundancy: u32 },
}

/// One distribute leg of the volume: a brick, or a replica or disperse set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subvolume {
    pub kind: SetKind,
    pub bricks: Vec<BrickSpec>,
    /// GlusterFS's name for it in the client graph: `VOL-replicate-N`,
    /// `VOL-disperse-N`, or `VOL-client-N` for a plain brick.
    pub name: String,
}

/// A volume's shape, as far as replicating it is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    pub fn bricks(&self) -> impl Iterator<Item = &BrickSpec> {
        self.subvolumes.iter().flat_map(|s| s.bricks.iter())
    }

    /// The subvolume that lists a brick at `path`.
    pub fn subvolume_of(&self, path: &std::path::Path) -> Option<&Subvolume> {
        self.subvolumes
            .iter()
            .find(|s| s.bricks.iter().any(|b| b.path == path))
    }

    /// Why georep cannot replicate this volume yet, naming its type and
    /// what is missing; `None` when every brick holds the whole volume as
    /// clients see it: a single brick, or a single replica set (with or
    /// without an arbiter), without sharding.
    pub fn unsupported(&self) -> Option<String> {
        let mut missing = Vec::new();
        let subvolumes = self.subvolumes.len();
        if subvolumes > 1 {
            missing.push(format!(
                "{subvolumes} distribute subvolumes: their bricks' listings must be merged into one slave directory, and DHT link files left out"
            ));
        }
        let sets = |kind: fn(&SetKind) -> bool| {
            self.subvolumes
                .iter()
                .any(|s| kind(&s.kind) && s.bricks.len() > 1)
        };
        if subvolumes > 1 && sets(|k| matches!(k, SetKind::Replica)) {
            missing.push(
                "several replica sets: each set's Active brick holds part of the namespace, to be merged as for distribute"
                    .to_owned(),
            );
        }
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
            "volume {} is {} with {} brick(s) ({}); georep replicates only a single brick or a single replica set yet, and does not handle: {}",
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_distributed_volume_is_refused_naming_its_type() {
        let t = fixture("dv");
        assert_eq!(t.type_name, "Distribute");
        assert_eq!(t.subvolumes.len(), 2);
        let why = t.unsupported().unwrap();
        assert!(
            why.contains("volume dv is Distribute with 2 brick(s)"),
            "{why}"
        );
        assert!(why.contains("2 distribute subvolumes"), "{why}");
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
        let why = t.unsupported().unwrap();
        assert!(why.contains("Distributed-Replicate"), "{why}");
        assert!(why.contains("2 distribute subvolumes") && why.contains("several replica sets"));
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
