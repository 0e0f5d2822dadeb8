//! Replica sets: every brick of a set holds the whole set, so exactly one
//! worker per set ships (Active) and the others wait (Passive), ready to
//! take over when the Active brick goes down.
//!
//! Three seams, each with the implementation for one node:
//!
//! - [`Election`]: who is Active. [`LocalElection`] is an exclusive
//!   `flock` on `<dir>/<subvolume>.lock`, held as long as the worker is
//!   Active; the kernel drops it if the monitor dies. `<dir>` is the
//!   session's directory on the meta-volume when one is mounted (see
//!   [`crate::meta`]: GlusterFS's locks translator then holds the lock
//!   against every node's client, and drops it when the holder's
//!   connection goes), else `<session dir>/sets` on this node.
//! - [`SetStime`]: the set's stime, which a new Active continues from.
//!   [`LocalStime`] keeps it in georep's state database, written to every
//!   member's row in one transaction, so any member reads it at takeover
//!   and a Passive row shows the set's LAST_SYNCED. Each brick records the
//!   same operations in its own changelog, so a time in one brick's
//!   changelog is a place in every member's.
//! - [`BrickHealth`]: whether a brick is up: its brick process runs
//!   (`gluster volume status VOL --xml`) and its directory is readable.
//!
//! An arbiter brick holds names and 0-byte files, never content: it never
//! runs for election.
//!
//! # Where the set's stime lives, and why
//!
//! GlusterFS keeps a stime xattr on each brick root and elects through a
//! lock on a shared meta-volume. georep keeps the set's stime where it
//! keeps every stime, in its state database, on the rows of all members,
//! moved in one transaction by the Active worker after each `Committed`:
//!
//! - Any member reads it at takeover without asking anyone: on one node
//!   every worker of the set is in the same monitor, with the same
//!   database, and the row of a Passive member already holds it (status
//!   shows it as the set's LAST_SYNCED with no extra query).
//! - It is never ahead of the slave: it moves only after the slave
//!   acknowledged a batch (after `syncfs`), exactly as a lone brick's does,
//!   and never back (`State::set_stime_of_set`).
//! - Nothing is written to the bricks (no `trusted.*` xattr), as for a lone
//!   brick: georep stays a reader of the volume.
//!
//! The alternative of the slave recording stime per subvolume in the same
//! commit as the data would make the slave the single source of truth
//! across nodes, at the price of a protocol change (a stime in every
//! commit, a read at takeover). For several master nodes the members of a
//! set are in different monitors: the election's lock is then on the
//! meta-volume, and [`SharedStime`] keeps the set's stime there too, beside
//! each node's own rows; the worker, the supervision and the status rows
//! stay as they are, since they only see these two traits. A fencing epoch
//! the slave checks (so a deposed Active cut off from the meta-volume
//! cannot commit) would be the slave's part of the same record.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::session::{BrickId, Stime};
use crate::state::{State, StateError};

/// The replica set a brick of the session belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetPlan {
    /// GlusterFS's name of the subvolume, e.g. `gv0-replicate-0`.
    pub name: String,
    /// The set's bricks in this session, this one included.
    pub members: Vec<BrickId>,
    /// This brick is the set's arbiter: never Active.
    pub arbiter: bool,
}

/// Changes a brick records may be stamped a little later in one member's
/// changelog than in another's (each rolls over on its own clock, and a
/// replicated write reaches the bricks one after the other): a new Active
/// replays its own changelog from this much before the set's stime.
/// Replaying is harmless; what the slave holds is not sent again.
pub const TAKEOVER_REPLAY: Duration = Duration::from_secs(5);

/// Why an election could not be held.
#[derive(Debug, thiserror::Error)]
#[error("election lock {path}: {source}")]
pub struct ElectionError {
    path: PathBuf,
    source: std::io::Error,
}

/// Held while a worker is its set's Active one; dropping it steps down.
pub struct Lease {
    _held: Box<dyn Send + Sync>,
}

/// Who of a replica set ships.
pub trait Election: Send + Sync {
    /// Makes the caller the Active worker of `set` if no one is; `None` if
    /// another member is.
    fn try_lead(&self, set: &str) -> Result<Option<Lease>, ElectionError>;
}

/// [`Election`] by a `flock` per set in one directory: among the workers
/// of one node, or of every node when the directory is on the
/// meta-volume.
pub struct LocalElection {
    dir: PathBuf,
}

impl LocalElection {
    pub fn new(dir: PathBuf) -> LocalElection {
        LocalElection { dir }
    }
}

impl Election for LocalElection {
    fn try_lead(&self, set: &str) -> Result<Option<Lease>, ElectionError> {
        let path = self.dir.join(format!("{set}.lock"));
        let err = |source| ElectionError {
            path: path.clone(),
            source,
        };
        crate::fsutil::create_private_dir(&self.dir).map_err(err)?;
        // Each call opens its own file description: flock excludes it from
        // every other one, also within this process.
        let file: File = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(err)?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(Lease {
                _held: Box::new(file),
            })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(err(e.into())),
        }
    }
}

/// Where the stime of a brick's set (or of a lone brick) is kept.
pub trait SetStime: Send + Sync {
    /// Everything changed before it is durably on the slave.
    fn stime(&self) -> Result<Option<Stime>, StateError>;
    /// Moves it forward to `to`; never back.
    fn advance(&self, to: Stime) -> Result<(), StateError>;
}

/// [`SetStime`] in the state database: the rows of every member.
pub struct LocalStime {
    state: State,
    own: BrickId,
    /// The set's bricks (only `own` for a brick of no set).
    members: Vec<BrickId>,
}

impl LocalStime {
    pub fn open(home: &Path, own: BrickId, set: Option<&SetPlan>) -> Result<Self, StateError> {
        Ok(LocalStime {
            state: State::open(home)?,
            own,
            members: set.map_or_else(|| vec![own], |s| s.members.clone()),
        })
    }
}

impl SetStime for LocalStime {
    fn stime(&self) -> Result<Option<Stime>, StateError> {
        Ok(self.state.bricks_by_id(self.own)?.and_then(|b| b.stime))
    }

    fn advance(&self, to: Stime) -> Result<(), StateError> {
        match self.stime()? {
            Some(s) if s >= to => Ok(()),
            _ if self.members == [self.own] => self.state.set_stime(self.own, to),
            _ => self.state.set_stime_of_set(&self.members, to),
        }
    }
}

/// [`SetStime`] of a set whose members are on several nodes: this
/// node's rows ([`LocalStime`]) and `<set>.stime.<node>` in the session's
/// directory on the meta-volume, which the Active worker rewrites after
/// each commit and a member that takes over reads, on whichever node: the
/// latest of every node's file (and of `<set>.stime`, written by earlier
/// versions). A file per node, rewritten in place, so that a split
/// meta-volume heals (see [`crate::meta::write`]); the latest is the set's
/// since the slave takes commits from one epoch of the set only (see
/// `monitor::fence`), so a deposed Active's file never moves past what
/// the slave holds.
/// The later of this node's rows and the files counts: both only ever hold
/// times the slave had acknowledged. The files are a convenience (a
/// takeover without them replays more, it never skips): failing to read
/// or write them is logged, not fatal.
pub struct SharedStime {
    local: LocalStime,
    dir: PathBuf,
    set: String,
    /// This node's file.
    file: PathBuf,
}

/// `node`'s file of set `set`'s stime in the session's directory `dir` on
/// the meta-volume (see [`SharedStime`]).
pub fn shared_stime_file(dir: &Path, set: &str, node: &str) -> PathBuf {
    dir.join(format!("{set}.stime.{node}"))
}

impl SharedStime {
    pub fn new(local: LocalStime, dir: &Path, set: &str, node: &str) -> SharedStime {
        SharedStime {
            local,
            dir: dir.to_owned(),
            set: set.to_owned(),
            file: shared_stime_file(dir, set, node),
        }
    }

    fn shared(&self) -> Option<Stime> {
        shared_set_stime(&self.dir, &self.set)
    }
}

/// Set `set`'s stime as the nodes left it in `dir` on the meta-volume: the
/// latest of their files (see [`SharedStime`]); `None` if none is there.
pub fn shared_set_stime(dir: &Path, set: &str) -> Option<Stime> {
    let files = match crate::meta::write::read_each(dir, &format!("{set}.stime")) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("reading the set's sync times in {}: {e}", dir.display());
            return None;
        }
    };
    files
        .iter()
        .filter_map(|(path, text)| match text.trim().parse::<i64>() {
            Ok(n) => Some(Stime::from_nanos(n)),
            Err(_) => {
                tracing::warn!("{}: not a sync time: {text:?}", path.display());
                None
            }
        })
        .max()
}

impl SetStime for SharedStime {
    fn stime(&self) -> Result<Option<Stime>, StateError> {
        Ok(self.local.stime()?.max(self.shared()))
    }

    fn advance(&self, to: Stime) -> Result<(), StateError> {
        self.local.advance(to)?;
        if self.shared().is_some_and(|s| s >= to) {
            return Ok(());
        }
        let written = crate::meta::write::rewrite(&self.file, to.nanos().to_string().as_bytes());
        if let Err(e) = written {
            tracing::warn!("writing the set's sync time {}: {e}", self.file.display());
        }
        Ok(())
    }
}

/// Whether each brick is up, as last seen: `Err(why)` names what is down.
pub type Verdicts = HashMap<PathBuf, Result<(), String>>;

/// The health of the session's bricks of replica sets, polled in the
/// background; workers watch their own brick.
#[derive(Clone)]
pub struct BrickHealth {
    rx: watch::Receiver<Arc<Verdicts>>,
}

impl BrickHealth {
    /// Polls every `period` until `shutdown`: one `gluster volume status`
    /// for the whole volume, and a listing of each brick directory. While
    /// the CLI cannot answer, only unreadable directories count as down
    /// (a glusterd restart is no reason to fail over).
    pub fn spawn(
        vol: String,
        bricks: Vec<PathBuf>,
        period: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) -> BrickHealth {
        let first = Arc::new(tokio::task::block_in_place(|| check(&vol, &bricks)));
        let (tx, rx) = watch::channel(first);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    _ = shutdown.changed() => break,
                }
                let (vol, bricks) = (vol.clone(), bricks.clone());
                let Ok(verdicts) = tokio::task::spawn_blocking(move || check(&vol, &bricks)).await
                else {
                    break;
                };
                tx.send_if_modified(|old| {
                    let changed = **old != verdicts;
                    if changed {
                        *old = Arc::new(verdicts);
                    }
                    changed
                });
            }
        });
        BrickHealth { rx }
    }

    /// Why `brick` is down, or `None` if it is up.
    pub fn down(&self, brick: &Path) -> Option<String> {
        self.rx.borrow().get(brick).and_then(|v| v.clone().err())
    }

    /// Waits for the next change of any verdict.
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            // The poller ended (shutdown): nothing will change any more.
            std::future::pending::<()>().await;
        }
    }
}

fn check(vol: &str, bricks: &[PathBuf]) -> Verdicts {
    let status = crate::volume::brick_status(vol);
    if let Err(e) = &status {
        tracing::warn!("cannot tell whether the bricks of {vol} run: {e}");
    }
    verdicts(vol, bricks, &status)
}

/// Each brick's verdict from the CLI's answer and its directory.
fn verdicts(
    vol: &str,
    bricks: &[PathBuf],
    status: &Result<Vec<crate::volume::BrickState>, crate::volume::VolumeError>,
) -> Verdicts {
    bricks
        .iter()
        .map(|b| {
            let verdict = match (status, std::fs::read_dir(b)) {
                (_, Err(e)) => Err(format!("brick {} is unreadable: {e}", b.display())),
                // The same path may be a brick on several nodes.
                (Ok(states), Ok(_)) => match states
                    .iter()
                    .find(|s| crate::volume::is_local(&s.host) && same_path(&s.path, b))
                {
                    Some(s) if !s.online => Err(format!(
                        "brick {} is offline (gluster volume status {vol})",
                        b.display()
                    )),
                    _ => Ok(()),
                },
                (Err(_), Ok(_)) => Ok(()),
            };
            (b.clone(), verdict)
        })
        .collect()
}

fn same_path(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_member_leads_until_it_steps_down() {
        let dir = tempfile::tempdir().unwrap();
        let election = LocalElection::new(dir.path().join("sets"));
        let lease = election.try_lead("gv0-replicate-0").unwrap();
        assert!(lease.is_some());
        assert!(election.try_lead("gv0-replicate-0").unwrap().is_none());
        // Another set has its own lock.
        assert!(election.try_lead("gv0-replicate-1").unwrap().is_some());
        drop(lease);
        assert!(election.try_lead("gv0-replicate-0").unwrap().is_some());
    }

    #[test]
    fn a_brick_is_down_when_its_process_is_offline_or_its_directory_unreadable() {
        use crate::volume::{BrickState, VolumeError};
        let dir = tempfile::tempdir().unwrap();
        let (up, off, gone) = (
            dir.path().join("up"),
            dir.path().join("off"),
            dir.path().join("gone"),
        );
        for d in [&up, &off] {
            std::fs::create_dir(d).unwrap();
        }
        let bricks = [up.clone(), off.clone(), gone.clone()];
        let state = |path: &Path, online| BrickState {
            // This node (a loopback address is always local).
            host: "127.0.0.1".into(),
            path: path.to_owned(),
            online,
        };
        let answer = Ok(vec![
            state(&up, true),
            state(&off, false),
            state(&gone, true),
        ]);
        let v = verdicts("gv0", &bricks, &answer);
        assert_eq!(v[&up], Ok(()));
        assert!(v[&off].as_ref().unwrap_err().contains("offline"), "{v:?}");
        assert!(
            v[&gone].as_ref().unwrap_err().contains("unreadable"),
            "{v:?}"
        );
        // No answer from the CLI: only the directories tell.
        let failed = Err(VolumeError::Refused {
            question: "status",
            vol: "gv0".into(),
            reason: "Connection failed".into(),
        });
        let v = verdicts("gv0", &bricks, &failed);
        assert_eq!((&v[&up], &v[&off]), (&Ok(()), &Ok(())));
        assert!(v[&gone].is_err());
    }

    /// A session of `bricks` in `home`; their ids.
    fn session_with(home: &Path, bricks: &[&str]) -> Vec<BrickId> {
        use crate::session::Brick;
        use crate::state::NewSession;
        let mut state = State::open(home).unwrap();
        let s = state
            .create_session(&NewSession {
                master_vol: "gv0".parse().unwrap(),
                slave: "root@dr::/srv/dr".parse().unwrap(),
                port: 22,
                host_key: String::new(),
                config: "{}".into(),
                bricks: bricks.iter().map(|b| Brick::new(b).unwrap()).collect(),
            })
            .unwrap();
        state.bricks(s.id).unwrap().iter().map(|b| b.id).collect()
    }

    /// What `first` moves, `second` reads; neither moves it back.
    fn shared_and_never_back(first: &dyn SetStime, second: &dyn SetStime) {
        first.advance(Stime::from_nanos(2_000)).unwrap();
        assert_eq!(second.stime().unwrap(), Some(Stime::from_nanos(2_000)));
        second.advance(Stime::from_nanos(1_000)).unwrap();
        assert_eq!(first.stime().unwrap(), Some(Stime::from_nanos(2_000)));
        second.advance(Stime::from_nanos(3_000)).unwrap();
        assert_eq!(first.stime().unwrap(), Some(Stime::from_nanos(3_000)));
    }

    #[test]
    fn a_member_on_another_node_continues_from_the_shared_stime() {
        let (node1, node2, meta) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let sets = meta.path().join("sets");
        // Each node has its own state database and its own brick row.
        let open = |home: &Path, node: &str| {
            let id = session_with(home, &["/data/brick1/gv0"])[0];
            let local = LocalStime::open(home, id, None).unwrap();
            SharedStime::new(local, &sets, "gv0-replicate-0", node)
        };
        let (a, b) = (open(node1.path(), "node1"), open(node2.path(), "node2"));
        assert_eq!(b.stime().unwrap(), None);
        shared_and_never_back(&a, &b);
        // Each node wrote its own file; the latest counts.
        assert!(sets.join("gv0-replicate-0.stime.node1").exists());
        assert!(sets.join("gv0-replicate-0.stime.node2").exists());
        // Torn files leave each node its own time, never an error.
        for node in ["node1", "node2"] {
            std::fs::write(sets.join(format!("gv0-replicate-0.stime.{node}")), b"3 0").unwrap();
        }
        assert_eq!(a.stime().unwrap(), Some(Stime::from_nanos(2_000)));
        assert_eq!(b.stime().unwrap(), Some(Stime::from_nanos(3_000)));
        // The file of an earlier version counts too.
        std::fs::write(sets.join("gv0-replicate-0.stime"), b"4000").unwrap();
        assert_eq!(a.stime().unwrap(), Some(Stime::from_nanos(4_000)));
    }

    #[test]
    fn a_set_stime_is_every_members_and_never_goes_back() {
        let home = tempfile::tempdir().unwrap();
        let ids = session_with(home.path(), &["/b1", "/b2"]);
        let set = SetPlan {
            name: "gv0-replicate-0".into(),
            members: ids.clone(),
            arbiter: false,
        };
        let first = LocalStime::open(home.path(), ids[0], Some(&set)).unwrap();
        let second = LocalStime::open(home.path(), ids[1], Some(&set)).unwrap();
        shared_and_never_back(&first, &second);
    }
}
