//! Which bricks `verify` reads the master volume through: one for each
//! distribute leg, so that what it compares is the volume as its clients
//! see it, never one brick taken for the whole.
//!
//! - A brick of no replica set is a leg of its own (a plain directory, a
//!   single-brick volume, a brick of a distribute volume).
//! - A replica set is one leg, read through one member that holds content
//!   (an arbiter's files are empty): the Active one while the session runs,
//!   which is the brick the set's part is shipped from, else the first
//!   member whose brick process is online. A member that is down may lack
//!   what the volume holds now.
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

/// The session's bricks verify reads, one a leg, in the session's order;
/// `active(b)`: `b` is its set's Active member now; `online(path)`: the
/// brick process of the brick at `path` runs. `topology` is the volume's
/// shape now (`recorded`: at `create`), when it is a GlusterFS volume.
pub(super) fn legs<'p>(
    bricks: &'p [BrickPlan],
    topology: Option<&Topology>,
    recorded: Option<&Topology>,
    active: &dyn Fn(&BrickPlan) -> bool,
    online: &dyn Fn(&Path) -> bool,
) -> Result<Vec<&'p BrickPlan>, String> {
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
        let chosen = members
            .iter()
            .find(|m| active(m))
            .or_else(|| members.iter().find(|m| online(&m.brick)));
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
    Ok(out)
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

    fn paths(legs: &[&BrickPlan]) -> Vec<PathBuf> {
        legs.iter().map(|b| b.brick.clone()).collect()
    }

    /// One leg a set: its Active member, else its first online member
    /// with content (never the arbiter); lone bricks each a leg.
    #[test]
    fn each_set_is_read_through_one_member_with_content() {
        let bricks = vec![
            brick("/a1", Some(("gv0-replicate-0", false))),
            brick("/a2", Some(("gv0-replicate-0", false))),
            brick("/arb", Some(("gv0-replicate-0", true))),
            brick("/b1", Some(("gv0-replicate-1", false))),
            brick("/b2", Some(("gv0-replicate-1", false))),
            brick("/c", None),
        ];
        let p = PathBuf::from;
        let got = legs(&bricks, None, None, &|b| b.brick == p("/b2"), &|_| true).unwrap();
        assert_eq!(paths(&got), [p("/a1"), p("/b2"), p("/c")]);
        let got = legs(&bricks, None, None, &|_| false, &|b| b != Path::new("/a1")).unwrap();
        assert_eq!(paths(&got), [p("/a2"), p("/b1"), p("/c")]);
        let err = legs(&bricks, None, None, &|_| false, &|b| b == Path::new("/arb")).unwrap_err();
        assert!(
            err.contains("gv0-replicate-0") && err.contains("/a1, /a2"),
            "{err}"
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
        let err = legs(&bricks, Some(&t), Some(&t), &|_| false, &|_| true).unwrap_err();
        assert!(
            err.contains("gv0-replicate-1")
                && err.contains("192.0.2.7:/b1, 192.0.2.8:/b2")
                && !err.contains("gv0-replicate-0"),
            "{err}"
        );
        let mut one = t.clone();
        one.subvolumes.truncate(1);
        let refused = |now: &Topology, recorded: &Topology| {
            legs(&bricks[..1], Some(now), Some(recorded), &|_| false, &|_| {
                true
            })
            .unwrap_err()
        };
        let got = legs(&bricks[..1], Some(&one), Some(&one), &|_| false, &|_| true).unwrap();
        assert_eq!(paths(&got), [PathBuf::from("/a1")]);
        let mut sharded = one.clone();
        sharded.sharded = true;
        for recorded in [&sharded, &one] {
            let err = refused(&sharded, recorded);
            assert!(err.contains("features.shard"), "{err}");
        }
        let mut dispersed = one.clone();
        dispersed.type_name = "Disperse".into();
        dispersed.subvolumes[0].kind = SetKind::Disperse { redundancy: 1 };
        let err = refused(&dispersed, &dispersed);
        assert!(err.contains("disperse"), "{err}");
    }
}
