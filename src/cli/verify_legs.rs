//! Which bricks `verify` reads the master volume through: one for each
//! distribute leg, so that what it compares is the volume as its clients
//! see it, never one brick taken for the whole.
//!
//! - A brick of no replica set is a leg of its own (a plain directory, a
//!   single-brick volume, a brick of a distribute volume).
//! - A replica set is one leg, read through one member that holds content
//!   (an arbiter's files are empty) and lacks nothing the others hold. A
//!   member that was down lacks what was written meanwhile until the
//!   replicate layer heals it, and the members a change reached list it
//!   for healing (`gluster volume heal VOL info summary`): while a set
//!   heals, it is read through such a member (the Active one if it is one,
//!   else the one listing the most). Otherwise through the Active member
//!   while the session runs, which is the brick the set's part is shipped
//!   from, else the first member whose brick process is online.
//! - Every leg is read from a brick on this node, as the workers read them
//!   (a local file system, GlusterFS's xattrs at hand, no FUSE round trip;
//!   see the README, "Why bricks"). A subvolume with no content brick here
//!   is refused, naming its bricks: its part of the namespace cannot be
//!   read without a client mount.
//! - Shapes whose bricks hold no whole files (disperse, `features.shard`)
//!   are refused, naming them, as `create` and `start` refuse them.

use std::path::Path;

use crate::monitor::BrickPlan;
use crate::volume::{is_local, Topology};

/// What is known of the bricks of the session now.
pub(super) struct Health<'a> {
    /// The brick is its set's Active member.
    pub active: &'a dyn Fn(&BrickPlan) -> bool,
    /// The process of the brick at this path runs.
    pub online: &'a dyn Fn(&Path) -> bool,
    /// The entries the brick at this path holds for other members of its
    /// set (pending heals); `None`: unknown.
    pub pending: &'a dyn Fn(&Path) -> Option<u64>,
}

/// The bricks to read, and what the operator should know about them.
pub(super) struct Legs<'p> {
    pub bricks: Vec<&'p BrickPlan>,
    pub notes: Vec<String>,
}

/// The session's bricks verify reads, one a leg, in the session's order.
/// `topology` is the volume's shape now (`recorded`: at `create`), when
/// it is a GlusterFS volume.
pub(super) fn legs<'p>(
    bricks: &'p [BrickPlan],
    topology: Option<&Topology>,
    recorded: Option<&Topology>,
    health: &Health,
) -> Result<Legs<'p>, String> {
    if let Some(t) = topology {
        if let Some(why) = t.unsupported() {
            return Err(format!("verify cannot read it: {why}"));
        }
        if let Some(why) = recorded.and_then(|r| t.changes_since(r)) {
            return Err(format!(
                "{why}; verify reads the bricks the session was planned with: start the session (it takes in bricks added to a distribute volume) or create it again"
            ));
        }
        for sub in &t.subvolumes {
            let here = sub.bricks.iter().any(|b| {
                !b.arbiter && is_local(&b.host) && bricks.iter().any(|p| p.brick == b.path)
            });
            if !here {
                let listed: Vec<String> = sub.bricks.iter().map(|b| b.to_string()).collect();
                return Err(format!(
                    "subvolume {} of {} has no brick with content in this session on this node ({}): verify reads each part of the volume from a brick here; run it on a node that holds a brick of every subvolume",
                    sub.name,
                    t.name,
                    listed.join(", ")
                ));
            }
        }
    }
    let mut out: Vec<&BrickPlan> = Vec::new();
    let mut notes = Vec::new();
    for b in bricks {
        let Some(set) = &b.set else {
            out.push(b);
            continue;
        };
        if out
            .iter()
            .any(|o| o.set.as_ref().is_some_and(|s| s.name == set.name))
        {
            continue;
        }
        let members: Vec<&BrickPlan> = bricks
            .iter()
            .filter(|m| {
                m.set
                    .as_ref()
                    .is_some_and(|s| s.name == set.name && !s.arbiter)
            })
            .collect();
        let online: Vec<&BrickPlan> = members
            .iter()
            .copied()
            .filter(|m| (health.online)(&m.brick))
            .collect();
        let holding = |m: &&BrickPlan| (health.pending)(&m.brick).unwrap_or(0);
        let sources: Vec<&BrickPlan> = online.iter().copied().filter(|m| holding(m) > 0).collect();
        let chosen = if sources.is_empty() {
            members
                .iter()
                .copied()
                .find(|m| (health.active)(m))
                .or_else(|| online.first().copied())
        } else {
            // The first of those listing the most, unless the Active is one.
            let most =
                sources
                    .iter()
                    .copied()
                    .fold(None, |best: Option<&BrickPlan>, m| match best {
                        Some(b) if holding(&b) >= holding(&m) => Some(b),
                        _ => Some(m),
                    });
            let chosen = sources
                .iter()
                .copied()
                .find(|m| (health.active)(m))
                .or(most);
            if let Some(m) = chosen {
                notes.push(format!(
                    "replica set {} is healing ({} entries wait on {} for the other members): read through it",
                    set.name,
                    holding(&m),
                    m.brick.display()
                ));
            }
            chosen
        };
        match chosen {
            Some(m) => out.push(m),
            None => {
                let listed: Vec<String> = members
                    .iter()
                    .map(|m| m.brick.display().to_string())
                    .collect();
                return Err(format!(
                    "no member of replica set {} holding content is online here ({}): verify reads the set through one of them",
                    set.name,
                    if listed.is_empty() {
                        "none in this session".to_owned()
                    } else {
                        listed.join(", ")
                    }
                ));
            }
        }
    }
    Ok(Legs { bricks: out, notes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crawl::journal::ChangeSource;
    use crate::monitor::sets::SetPlan;
    use crate::session::BrickId;
    use crate::volume::{BrickSpec, SetKind, Subvolume};
    use std::path::PathBuf;

    fn brick(path: &str, set: Option<(&str, bool)>) -> BrickPlan {
        BrickPlan {
            brick_id: BrickId::new(1),
            brick: PathBuf::from(path),
            journal_dir: PathBuf::new(),
            source: ChangeSource::Notify(PathBuf::new()),
            exclude: Vec::new(),
            set: set.map(|(name, arbiter)| SetPlan {
                name: name.into(),
                members: Vec::new(),
                arbiter,
            }),
            gluster: true,
        }
    }

    fn spec(host: &str, path: &str, arbiter: bool) -> BrickSpec {
        BrickSpec {
            host: host.into(),
            path: path.into(),
            arbiter,
        }
    }

    fn topology(subvolumes: Vec<(SetKind, Vec<BrickSpec>)>) -> Topology {
        Topology {
            name: "gv0".into(),
            type_name: "Distributed-Replicate".into(),
            status: "Started".into(),
            subvolumes: subvolumes
                .into_iter()
                .enumerate()
                .map(|(i, (kind, bricks))| Subvolume {
                    kind,
                    bricks,
                    name: format!("gv0-replicate-{i}"),
                })
                .collect(),
            sharded: false,
        }
    }

    fn paths(legs: &Legs) -> Vec<PathBuf> {
        legs.bricks.iter().map(|b| b.brick.clone()).collect()
    }

    /// `legs` with `active`, `online` and `pending` as given.
    fn read(
        bricks: &[BrickPlan],
        now: Option<&Topology>,
        recorded: Option<&Topology>,
        active: &dyn Fn(&BrickPlan) -> bool,
        online: &dyn Fn(&Path) -> bool,
        pending: &dyn Fn(&Path) -> Option<u64>,
    ) -> Result<Vec<PathBuf>, String> {
        let health = Health {
            active,
            online,
            pending,
        };
        legs(bricks, now, recorded, &health).map(|l| paths(&l))
    }

    fn sets() -> Vec<BrickPlan> {
        vec![
            brick("/a1", Some(("gv0-replicate-0", false))),
            brick("/a2", Some(("gv0-replicate-0", false))),
            brick("/arb", Some(("gv0-replicate-0", true))),
            brick("/b1", Some(("gv0-replicate-1", false))),
            brick("/b2", Some(("gv0-replicate-1", false))),
            brick("/c", None),
        ]
    }

    /// One leg a set: its Active member, else its first online member
    /// with content (never the arbiter); lone bricks each a leg.
    #[test]
    fn each_set_is_read_through_one_member_with_content() {
        let bricks = sets();
        let p = PathBuf::from;
        let none = |_: &Path| None;
        let got = read(
            &bricks,
            None,
            None,
            &|b| b.brick == p("/b2"),
            &|_| true,
            &none,
        );
        assert_eq!(got.unwrap(), [p("/a1"), p("/b2"), p("/c")]);
        let got = read(&bricks, None, None, &|_| false, &|b| b != p("/a1"), &none);
        assert_eq!(got.unwrap(), [p("/a2"), p("/b1"), p("/c")]);
        let err = read(&bricks, None, None, &|_| false, &|b| b == p("/arb"), &none);
        let err = err.unwrap_err();
        assert!(
            err.contains("gv0-replicate-0") && err.contains("/a1, /a2"),
            "{err}"
        );
    }

    /// While a set heals it is read through a member that holds what the
    /// others lack, even when another is Active; the note says so.
    #[test]
    fn a_healing_set_is_read_through_a_member_the_others_lack_entries_of() {
        let bricks = sets();
        let p = PathBuf::from;
        let pending = |b: &Path| match b.to_str() {
            Some("/a2") => Some(3),
            Some("/b1") | Some("/b2") => Some(2),
            _ => Some(0),
        };
        let active = |b: &BrickPlan| b.brick == p("/a1") || b.brick == p("/b2");
        let got = read(&bricks, None, None, &active, &|_| true, &pending);
        assert_eq!(got.unwrap(), [p("/a2"), p("/b2"), p("/c")]);
        let got = read(&bricks, None, None, &|_| false, &|_| true, &pending);
        assert_eq!(got.unwrap(), [p("/a2"), p("/b1"), p("/c")]);
        // Offline, it is not read.
        let got = read(&bricks, None, None, &active, &|b| b != p("/a2"), &pending);
        assert_eq!(got.unwrap(), [p("/a1"), p("/b2"), p("/c")]);
        let health = Health {
            active: &active,
            online: &|_| true,
            pending: &pending,
        };
        let notes = legs(&bricks, None, None, &health).unwrap().notes;
        assert!(
            notes[0].contains("gv0-replicate-0") && notes[0].contains("/a2"),
            "{notes:?}"
        );
    }

    /// A subvolume whose content bricks are all on another node is
    /// refused naming them; disperse and sharding are refused naming them.
    #[test]
    fn parts_not_readable_here_and_shapes_without_whole_files_are_refused() {
        let bricks = vec![
            brick("/a1", Some(("gv0-replicate-0", false))),
            brick("/arb", Some(("gv0-replicate-1", true))),
        ];
        let t = topology(vec![
            (
                SetKind::Replica,
                vec![
                    spec("localhost", "/a1", false),
                    spec("192.0.2.7", "/a2", false),
                ],
            ),
            (
                SetKind::Replica,
                vec![
                    spec("192.0.2.7", "/b1", false),
                    spec("192.0.2.8", "/b2", false),
                    spec("localhost", "/arb", true),
                ],
            ),
        ]);
        let with = |bricks: &[BrickPlan], now: &Topology, recorded: &Topology| {
            read(
                bricks,
                Some(now),
                Some(recorded),
                &|_| false,
                &|_| true,
                &|_| None,
            )
        };
        let err = with(&bricks, &t, &t).unwrap_err();
        assert!(
            err.contains("gv0-replicate-1")
                && err.contains("192.0.2.7:/b1, 192.0.2.8:/b2")
                && !err.contains("gv0-replicate-0"),
            "{err}"
        );
        let mut one = t.clone();
        one.subvolumes.truncate(1);
        assert_eq!(
            with(&bricks[..1], &one, &one).unwrap(),
            [PathBuf::from("/a1")]
        );
        let mut sharded = one.clone();
        sharded.sharded = true;
        for recorded in [&sharded, &one] {
            let err = with(&bricks[..1], &sharded, recorded).unwrap_err();
            assert!(err.contains("features.shard"), "{err}");
        }
        let mut dispersed = one.clone();
        dispersed.type_name = "Disperse".into();
        dispersed.subvolumes[0].kind = SetKind::Disperse { redundancy: 1 };
        let err = with(&bricks[..1], &dispersed, &dispersed).unwrap_err();
        assert!(err.contains("disperse"), "{err}");
    }
}
