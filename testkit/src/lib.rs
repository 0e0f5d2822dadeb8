//! Test kit: the real parts georep's tests, the demo (`georep-demo`) and the
//! benchmarks run against.
//!
//! A crate of its own in the workspace, so one implementation serves
//! `tests/integration.rs`, the demo and the benchmark runner ([`bench`],
//! `src/bin/`), while the product (`georep`, `geo-rep`) never builds it:
//!
//! - [`Sshd`]: a throwaway OpenSSH `sshd` on 127.0.0.1 with a free port, its
//!   own host key, its own `authorized_keys` and an operator key pair, all in
//!   a temporary directory. It never reads or writes the machine's own
//!   `~/.ssh` or `/etc/ssh`. Dropping it stops the daemon.
//! - [`compare_trees`] / [`assert_trees_equal`]: compare two directory trees
//!   (type, size, content hash, mode, mtime to the nanosecond, symlink
//!   target, missing and extra entries). Names are bytes, not UTF-8.
//! - [`run_with_timeout`], [`wait_until`], [`wait_for`]: bounded waiting; a
//!   timeout only bounds waiting, it never asserts a wall-clock budget.
//! - [`glusterfs`]: a real GlusterFS volume (glusterd, brick with
//!   changelogs, FUSE mount), installed and started on demand.
//! - [`cluster`]: a multi-node GlusterFS cluster in network namespaces on
//!   this machine (replica-2 `gv0`, shared storage) and a DR site with its
//!   own sshd, for several master nodes.
//! - [`hostile::FakeMaster`]: crafted request streams written into a real
//!   `geo-rep slave` process, its replies read back, its peak memory read
//!   from `/proc`.
//! - [`churn`]: a client's workload through a volume mount, and a watch that
//!   samples the slave for what must never appear there.
//! - Fixtures: [`random_bytes`], [`sample_tree`], [`copy_tree`], [`set_mtime`].
//!
//! Nothing here is used by the product at run time.

pub mod bench;
pub mod churn;
pub mod cluster;
mod fixtures;
pub mod glusterfs;
pub mod hostile;
mod process;
mod sshd;
mod tree;

pub use fixtures::{copy_tree, log_text, random_bytes, sample_tree, set_mtime, SampleTree};
pub use process::{
    find_processes, geo_rep_beside_current_exe, net_namespace, processes_in_net_namespace,
    run_with_timeout, signal, wait_for, wait_until, CommandOutput,
};
pub use sshd::Sshd;
pub use tree::{
    assert_trees_equal, assert_trees_equal_with, compare_trees, data_ranges, display_path,
    CompareOptions, Difference, DifferenceKind, EntryType,
};

use std::path::PathBuf;
use std::time::Duration;

/// Why a test-kit step failed. Each variant names the thing and carries what
/// is needed to diagnose it (e.g. the sshd log).
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed ({status}): {stderr}")]
    Command {
        what: String,
        status: String,
        stderr: String,
    },
    #[error(
        "sshd on 127.0.0.1:{port} did not become ready: {why}\n--- sshd log {log_path} ---\n{log}"
    )]
    SshdNotReady {
        port: u16,
        why: String,
        log_path: PathBuf,
        log: String,
    },
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout { what: String, waited: Duration },
    /// A real service (e.g. GlusterFS) could not be installed or set up.
    #[error("{0}")]
    Setup(String),
}

impl TestkitError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TestkitError {
        let what = what.into();
        move |source| TestkitError::Io { what, source }
    }
}
