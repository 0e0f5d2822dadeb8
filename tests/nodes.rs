//! Several master nodes: a real GlusterFS cluster of network namespaces on
//! this machine (`georep_testkit::cluster`), with a DR site behind its own
//! sshd.
//!
//! Needs root and /dev/fuse, as `tests/gluster.rs`: skipped without them,
//! except in CI, where that is a failure.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use georep_testkit::cluster::{Cluster, DR_HOST, SHARED_STORAGE, VOLUME};
use georep_testkit::glusterfs::{gluster, Glusterd, Volume};
use georep_testkit::{run_with_timeout, wait_until};

use crate::common::SYNC_TIMEOUT;
use crate::gluster::gluster_can_run;

/// The process's cluster, or `None` when the test must be skipped.
pub(crate) fn cluster() -> Option<Arc<Cluster>> {
    gluster_can_run().then(|| {
        Cluster::shared().unwrap_or_else(|e| panic!("cannot build the GlusterFS cluster: {e}"))
    })
}

/// The cluster is real: every node sees every other as a connected peer,
/// a file written through node1's FUSE mount lands on both bricks (on two
/// nodes) and shows through node2's mount, the shared storage is mounted
/// on every node, and node1 reaches the DR site's sshd by name.
#[test]
fn a_file_written_on_node1_is_on_both_nodes_bricks() {
    let Some(c) = cluster() else { return };
    for n in c.nodes() {
        let peers = n.gluster(["peer", "status"]).unwrap();
        assert_eq!(
            peers.matches("Peer in Cluster (Connected)").count(),
            c.nodes().len() - 1,
            "{}: {peers}",
            n.name()
        );
        assert_eq!(n.sh("hostname").unwrap().trim(), n.name());
        n.sh(&format!("mountpoint -q {SHARED_STORAGE}"))
            .unwrap_or_else(|e| panic!("no shared storage on {}: {e}", n.name()));
    }
    let name = format!("probe-{}", std::process::id());
    let (node1, node2) = (c.node(1), c.node(2));
    let written = node1.view(&node1.mount()).unwrap().join(&name);
    fs::write(&written, b"hello from node1").unwrap();
    for brick in [node1.brick(), node2.brick()] {
        let on_brick = brick.join(&name);
        wait_until(SYNC_TIMEOUT, Duration::from_millis(100), || {
            fs::read(&on_brick).is_ok_and(|b| b == b"hello from node1")
        })
        .unwrap_or_else(|_| panic!("{} never held the file", on_brick.display()));
    }
    let seen = node2.view(&node2.mount()).unwrap().join(&name);
    assert_eq!(fs::read(&seen).unwrap(), b"hello from node1");
    let sshd = c.sshd();
    let sshd = sshd.as_ref().unwrap();
    let key = sshd.operator_key().display().to_string();
    let out = run_with_timeout(
        node1.command("ssh").args([
            "-i",
            &key,
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            &format!("root@{DR_HOST}"),
            "cat /proc/sys/kernel/hostname; readlink /proc/self/ns/net",
        ]),
        SYNC_TIMEOUT,
    )
    .unwrap();
    assert!(out.success(), "{out}\n{}", sshd.log());
    let dr_ns = fs::metadata(c.dr_netns_path()).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.ino()
    });
    assert!(
        out.stdout_str()
            .contains(&format!("net:[{}]", dr_ns.unwrap())),
        "the DR login ran outside the DR namespace: {out}"
    );
    fs::remove_file(&written).unwrap();
}

/// The machine's own glusterd (the one the single-node tests share) is
/// the one in the test's network namespace: with the cluster's glusterds
/// running, a volume made through it is listed by the machine's CLI and
/// by no node's.
#[test]
fn the_single_node_glusterd_is_never_a_cluster_nodes() {
    let Some(c) = cluster() else { return };
    let g = Glusterd::shared().unwrap_or_else(|e| panic!("cannot run GlusterFS: {e}"));
    let dir = tempfile::Builder::new()
        .prefix("georep-it-")
        .tempdir()
        .unwrap();
    let name = format!("georep{}hostgd", std::process::id());
    let v = Volume::create(&g, &name, dir.path())
        .unwrap_or_else(|e| panic!("cannot create GlusterFS volume {name}: {e}"));
    let listed = gluster(["volume", "list"]).unwrap();
    assert!(listed.lines().any(|l| l == name), "{listed}");
    for n in c.nodes() {
        let theirs = n.gluster(["volume", "list"]).unwrap();
        assert!(!theirs.lines().any(|l| l == name), "{}: {theirs}", n.name());
        assert!(
            theirs.lines().any(|l| l == VOLUME),
            "{}: {theirs}",
            n.name()
        );
    }
    assert!(Path::new(&v.mount).is_dir());
    drop(v);
}
