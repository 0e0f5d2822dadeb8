//! The bricks of a session as GlusterFS knows them: those of a volume on
//! this node, for `create` without `--brick` (the local ones are those
//! whose host names this machine), whether the session's shape is one
//! georep copies exactly, and which replica set each brick belongs to.

use std::path::PathBuf;

use anyhow::bail;

use crate::session::{Home, SessionId, VolumeName};
use crate::state::State;
pub use crate::volume::gluster_present;
use crate::volume::{all_volumes, is_local, volume_info, BrickSpec, SetKind, Topology};

/// The bricks of `vol` that live on this node, once its shape is known to
/// be one georep handles.
pub fn local_bricks(vol: &VolumeName) -> anyhow::Result<Vec<PathBuf>> {
    let topology = volume_info(vol.as_str())?;
    refuse_unsupported(&topology)?;
    let local: Vec<PathBuf> = topology
        .bricks()
        .filter(|b| is_local(&b.host))
        .map(|b| b.path.clone())
        .collect();
    if local.is_empty() {
        bail!(
            "no brick of {vol} is on this node (bricks: {}); run `create` on a node that holds one, or pass --brick",
            topology
                .bricks()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(local)
}

/// Refuses a session whose bricks georep would not copy exactly: a
/// GlusterFS volume of a shape not handled yet (whether or not `--brick`
/// named its bricks), part of a distributed volume, or several directories
/// merged into one slave directory that are neither the members of one
/// replica set nor the bricks of one distributed volume (each brick's
/// worker would prune the others' files). Run at `create` and again at
/// `start`, since a volume can change shape. Returns the volume that lists
/// the bricks, if they hold a GlusterFS tree (`create` records it).
pub fn check_shape(vol: &VolumeName, bricks: &[PathBuf]) -> anyhow::Result<Option<Topology>> {
    let topology = gluster_shape(vol, bricks)?;
    let whole_distribute = match &topology {
        Some(t) => accept(t, bricks)?,
        None => false,
    };
    let one_set = topology.as_ref().is_some_and(|t| {
        t.subvolumes.len() == 1
            && t.subvolumes[0].kind == SetKind::Replica
            && bricks.iter().all(|b| t.subvolume_of(b).is_some())
    });
    if bricks.len() > 1 && !one_set && !whole_distribute {
        bail!(
            "{} bricks ({}) into one slave directory are not supported yet: each brick's worker would remove the others' files there; create one session per brick, each into its own slave directory",
            bricks.len(),
            shown(bricks)
        );
    }
    Ok(topology)
}

/// Records, for each brick of session `id`, the replica set `topology`
/// puts it in (none for a plain brick), so the monitor elects one Active
/// worker per set and the set's bricks share one stime.
pub fn record_sets(state: &State, id: SessionId, topology: &Topology) -> anyhow::Result<()> {
    for b in state.bricks(id)? {
        let path = b.brick.path();
        let set = topology
            .subvolume_of(path)
            .filter(|s| s.kind == SetKind::Replica);
        let arbiter = set
            .and_then(|s| s.bricks.iter().find(|x| x.path == path))
            .is_some_and(|x| x.arbiter);
        state.set_subvolume(b.id, set.map(|s| s.name.as_str()), arbiter)?;
    }
    Ok(())
}

/// The shape of the volume whose bricks these are, if they hold a
/// GlusterFS tree, once it is known to be one georep handles.
fn gluster_shape(vol: &VolumeName, bricks: &[PathBuf]) -> anyhow::Result<Option<Topology>> {
    // `gluster volume create` makes `.glusterfs` in every brick, so a
    // plain directory never costs a question to glusterd (seconds when
    // no daemon answers).
    if bricks.iter().any(|b| b.join(".glusterfs").is_dir()) {
        if !gluster_present() {
            bail!(
                "brick(s) {} hold a GlusterFS tree (.glusterfs) but no `gluster` CLI is here to tell the shape of {vol}",
                shown(bricks)
            );
        }
        let topology = match volume_info(vol.as_str()) {
            Ok(topology) => topology,
            // Bricks of a volume the session is not named after: the
            // volume that lists them decides.
            Err(e) if e.is_missing_volume() => {
                let owner = all_volumes()?.into_iter().find(|t| {
                    t.bricks()
                        .any(|b| is_local(&b.host) && bricks.contains(&b.path))
                });
                match owner {
                    Some(topology) => topology,
                    None => bail!(
                        "{e}, and no volume lists brick(s) {}, which hold a GlusterFS tree (.glusterfs): its shape cannot be checked",
                        shown(bricks)
                    ),
                }
            }
            Err(e) => bail!(
                "{e}; brick(s) {} hold a GlusterFS tree (.glusterfs), and the shape of {vol} must be known before they are replicated",
                shown(bricks)
            ),
        };
        refuse_unsupported(&topology)?;
        return Ok(Some(topology));
    }
    Ok(None)
}

/// Compares the volume with the topology recorded at `create` (see
/// [`Topology::changes_since`]), run at `start` before its shape is
/// checked: bricks added to a plain distribute volume on this node join
/// the session (and are named), any other change is refused, named.
pub fn follow_changes(home: &Home, session: SessionId) -> anyhow::Result<()> {
    let Some(recorded) = Topology::load(&home.session_topology(session))? else {
        return Ok(());
    };
    let now = volume_info(&recorded.name)?;
    let added = crate::monitor::follow_volume(home, session, &recorded, &now)
        .map_err(|why| anyhow::anyhow!(why))?;
    for (_, brick) in added {
        println!(
            "brick {} was added to {}: it joins the session",
            brick.display(),
            recorded.name
        );
    }
    Ok(())
}

/// Refuses a volume of a shape not handled yet; for a distributed one,
/// also unless `bricks` are all of its bricks and all on this node (each
/// brick's worker keeps on the slave what the others hold, so it must see
/// them). True when `bricks` are the whole distributed volume.
fn accept(topology: &Topology, bricks: &[PathBuf]) -> anyhow::Result<bool> {
    refuse_unsupported(topology)?;
    if topology.subvolumes.len() < 2 {
        return Ok(false);
    }
    let named = |b: &PathBuf| {
        let real = std::fs::canonicalize(b).unwrap_or_else(|_| b.clone());
        bricks
            .iter()
            .any(|x| x == b || std::fs::canonicalize(x).is_ok_and(|x| x == real))
    };
    let listed = |keep: &dyn Fn(&BrickSpec) -> bool| {
        let found: Vec<String> = topology
            .bricks()
            .filter(|b| keep(b))
            .map(|b| b.to_string())
            .collect();
        (!found.is_empty()).then(|| found.join(", "))
    };
    if let Some(remote) = listed(&|b| !is_local(&b.host)) {
        bail!(
            "volume {} is {} with brick(s) on other nodes ({remote}); georep replicates a distributed volume only when all its bricks are on this node yet",
            topology.name,
            topology.type_name,
        );
    }
    if let Some(left) = listed(&|b| !named(&b.path)) {
        bail!(
            "volume {} is {}: its bricks hold one namespace, and the session names only some of them (not {left}); create it without --brick to take them all",
            topology.name,
            topology.type_name,
        );
    }
    Ok(true)
}

fn refuse_unsupported(topology: &Topology) -> anyhow::Result<()> {
    match topology.unsupported() {
        Some(why) => bail!("{why}"),
        None => Ok(()),
    }
}

fn shown(bricks: &[PathBuf]) -> String {
    bricks
        .iter()
        .map(|b| b.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_plain_directories_into_one_slave_are_refused() {
        let vol: VolumeName = "georep-no-such-volume".parse().unwrap();
        let dirs = tempfile::tempdir().unwrap();
        let (a, b) = (dirs.path().join("a"), dirs.path().join("b"));
        for d in [&a, &b] {
            std::fs::create_dir(d).unwrap();
        }
        check_shape(&vol, std::slice::from_ref(&a)).unwrap();
        let err = check_shape(&vol, &[a, b]).unwrap_err().to_string();
        assert!(
            err.contains("2 bricks") && err.contains("one session per brick"),
            "{err}"
        );
    }

    #[test]
    fn a_brick_of_a_gluster_tree_needs_its_volume() {
        let vol: VolumeName = "georep-no-such-volume".parse().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".glusterfs")).unwrap();
        let err = check_shape(&vol, &[dir.path().to_owned()])
            .unwrap_err()
            .to_string();
        assert!(err.contains(".glusterfs"), "{err}");
    }
}
