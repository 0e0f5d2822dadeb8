//! Replica sets that are healing, as the Active worker of a set must know
//! them.
//!
//! The Active worker reads its own brick's changelog. A write that reached
//! the other members of its set but not this brick (the client had lost
//! its connection to it: the brick process was stopped or restarted, or cut
//! off, while this worker went on reading) is in no record this worker
//! reads until the replicate layer heals the brick; the heal's operations
//! are journalled then, as the self-heal daemon performs them. Until then
//! the brick's (empty) changelogs would move stime past a write the slave
//! never received.
//!
//! The members a write reached list it for healing. So:
//!
//! - while a worker of this node is the Active member of a set, the
//!   monitor asks `gluster volume heal VOL info summary` every [`POLL`]
//!   ([`HealWatch`]);
//! - an Active worker lets its set's stime reach at most the moment the
//!   latest answer with nothing pending on the other members was asked
//!   for ([`HealGate`]). While another member lists entries, stime stays
//!   where it was and the status row says why;
//! - once nothing is pending any more, the heal was journalled on this
//!   brick before that answer was asked for: stime moves on once the
//!   changelog has been read past that moment;
//! - while entries are pending the monitor asks the self-heal daemon to
//!   heal now (`gluster volume heal VOL`, as an operator would), at most
//!   every [`NUDGE`], rather than at its periodic crawl
//!   (`cluster.heal-timeout`, ten minutes by default).
//!
//! Left open: a member the CLI cannot reach (its brick is down) lists
//! nothing, so a write that it alone received is not seen; and an entry a
//! client's transaction still holds locked is "possibly healing", not
//! counted, until the lock is released.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::session::Stime;
use crate::volume::{heal_now, heal_summary, is_local, HealState, SetKind, Topology};

/// How often the monitor asks which entries the bricks hold for healing.
pub const POLL: Duration = Duration::from_secs(2);

/// How often, at most, the monitor asks the self-heal daemon to heal.
pub const NUDGE: Duration = Duration::from_secs(30);

/// One answer of `gluster volume heal VOL info summary`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealCheck {
    /// When it was asked for: every heal it does not list ended before.
    pub asked_at: Stime,
    pub bricks: Vec<HealState>,
}

/// The latest answer, shared by the workers; `Default`: a volume with no
/// replica set (nothing to wait for).
#[derive(Debug, Clone, Default)]
pub struct HealWatch {
    rx: Option<watch::Receiver<Option<Arc<HealCheck>>>>,
    /// How many gates are open: the CLI is asked only while one is.
    gates: Arc<AtomicUsize>,
}

impl HealWatch {
    /// Asks for `vol`'s heals now and then every [`POLL`] until `shutdown`,
    /// if it has a replica set. While the CLI cannot answer, the last
    /// answer stands (and stime waits for a newer one).
    pub fn spawn(topology: &Topology, mut shutdown: watch::Receiver<bool>) -> HealWatch {
        let replicated = topology
            .subvolumes
            .iter()
            .any(|s| s.kind == SetKind::Replica && s.bricks.len() > 1);
        if !replicated {
            return HealWatch::default();
        }
        let vol = topology.name.clone();
        let (tx, rx) = watch::channel(None);
        let gates = Arc::new(AtomicUsize::new(0));
        let open = gates.clone();
        tokio::spawn(async move {
            let mut nudged: Option<std::time::Instant> = None;
            loop {
                if open.load(Ordering::Relaxed) == 0 {
                    tokio::select! {
                        _ = tokio::time::sleep(POLL / 4) => continue,
                        _ = shutdown.changed() => break,
                    }
                }
                let asked_at = Stime::now();
                let asked = vol.clone();
                let Ok(answer) = tokio::task::spawn_blocking(move || heal_summary(&asked)).await
                else {
                    break;
                };
                match answer {
                    Ok(bricks) => {
                        let pending: u64 = bricks.iter().filter_map(|b| b.pending).sum();
                        if pending == 0 {
                            nudged = None;
                        } else if nudged.is_none_or(|t| t.elapsed() >= NUDGE) {
                            nudged = Some(std::time::Instant::now());
                            nudge(&vol, pending).await;
                        }
                        tx.send_replace(Some(Arc::new(HealCheck { asked_at, bricks })));
                    }
                    Err(e) => tracing::debug!("cannot tell whether {vol} is healing: {e}"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = shutdown.changed() => break,
                }
            }
        });
        HealWatch {
            rx: Some(rx),
            gates,
        }
    }

    /// The gate of `brick`, the Active member of replica set `set` of
    /// `topology`, if the volume's heals are watched; while it is open the
    /// CLI is asked.
    pub fn gate(&self, topology: &Topology, set: &str, brick: &Path) -> Option<HealGate> {
        self.rx.as_ref()?;
        let mut gate = HealGate::new(topology, set, brick);
        gate.open = Some(Open::new(self.gates.clone()));
        Some(gate)
    }

    /// The latest answer, if there has been one.
    pub fn latest(&self) -> Option<Arc<HealCheck>> {
        self.rx.as_ref().and_then(|rx| rx.borrow().clone())
    }
}

async fn nudge(vol: &str, pending: u64) {
    tracing::info!("{pending} entries of {vol} wait for a heal: asking GlusterFS to heal now");
    let asked = vol.to_owned();
    match tokio::task::spawn_blocking(move || heal_now(&asked)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("cannot start a heal of {vol}: {e}"),
        Err(e) => tracing::warn!("cannot start a heal of {vol}: {e}"),
    }
}

/// How far the Active worker of a replica set may move the set's stime,
/// given the heals of the set's other members (see the module docs).
#[derive(Debug)]
pub struct HealGate {
    /// The set's other members, as GlusterFS names them.
    others: Vec<(String, PathBuf)>,
    /// `asked_at` of the last answer taken in.
    seen: Option<Stime>,
    /// Stime may reach this.
    allowed: Option<Stime>,
    /// The latest answer with nothing pending elsewhere.
    latest_clean: Option<Stime>,
    /// Entries other members list, in words, while they do.
    healing: Option<String>,
    /// Heals ended before this: `allowed` stays until the changelog has
    /// been read past it.
    settling: Option<Stime>,
    open: Option<Open>,
}

/// Counts a gate as open until dropped.
#[derive(Debug)]
struct Open(Arc<AtomicUsize>);

impl Open {
    fn new(gates: Arc<AtomicUsize>) -> Open {
        gates.fetch_add(1, Ordering::Relaxed);
        Open(gates)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl HealGate {
    /// The gate of `brick`, a member of replica set `set` of `topology`.
    fn new(topology: &Topology, set: &str, brick: &Path) -> HealGate {
        let others = topology
            .subvolumes
            .iter()
            .filter(|s| s.name == set)
            .flat_map(|s| &s.bricks)
            .filter(|b| !(b.path == brick && is_local(&b.host)))
            .map(|b| (b.host.clone(), b.path.clone()))
            .collect();
        HealGate::watching(others)
    }

    fn watching(others: Vec<(String, PathBuf)>) -> HealGate {
        HealGate {
            others,
            seen: None,
            allowed: None,
            latest_clean: None,
            healing: None,
            settling: None,
            open: None,
        }
    }

    /// Takes in `check` if it is newer than the last one.
    pub fn observe(&mut self, check: &HealCheck) {
        if self.seen.is_some_and(|s| s >= check.asked_at) {
            return;
        }
        self.seen = Some(check.asked_at);
        let pending: Vec<String> = check
            .bricks
            .iter()
            .filter(|b| {
                self.others
                    .iter()
                    .any(|(h, p)| *h == b.host && *p == b.path)
            })
            .filter_map(|b| {
                let n = b.pending.filter(|n| *n > 0)?;
                Some(format!("{n} on {}:{}", b.host, b.path.display()))
            })
            .collect();
        if !pending.is_empty() {
            self.healing = Some(pending.join(", "));
            self.settling = None;
            return;
        }
        if self.healing.take().is_some() {
            self.settling = Some(check.asked_at);
        }
        self.latest_clean = Some(check.asked_at);
        if self.settling.is_none() {
            self.allowed = self.latest_clean;
        }
    }

    /// The latest stime the set may be given, with this brick's changelog
    /// read through `cursor`; `None`: none yet.
    pub fn bound(&mut self, cursor: Option<Stime>) -> Option<Stime> {
        if let Some(ended) = self.settling {
            // A changelog read into the second after `ended` holds every
            // operation made before it.
            if cursor.is_some_and(|c| c >= Stime::from_secs(ended.secs() + 1)) {
                self.settling = None;
                self.allowed = self.latest_clean;
            }
        }
        self.allowed
    }

    /// Why stime waits, in words for the status row.
    pub fn waiting(&self) -> Option<String> {
        if let Some(pending) = &self.healing {
            return Some(format!(
                "the replica set is healing entries this brick missed ({pending} pending): LAST_SYNCED waits until they are healed and shipped"
            ));
        }
        self.settling.map(|_| {
            "the replica set has healed entries this brick missed: LAST_SYNCED waits until they are shipped".to_owned()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{BrickSpec, Subvolume};

    #[test]
    fn the_other_members_are_the_set_s_bricks_but_this_one() {
        let here = hostname::get().unwrap().to_string_lossy().into_owned();
        let brick = |host: &str, p: &str| BrickSpec {
            host: host.into(),
            path: p.into(),
            arbiter: false,
        };
        let set = |n: usize, bricks| Subvolume {
            kind: SetKind::Replica,
            bricks,
            name: format!("gv0-replicate-{n}"),
        };
        let topology = Topology {
            name: "gv0".into(),
            type_name: "Distributed-Replicate".into(),
            status: "Started".into(),
            subvolumes: vec![
                set(0, vec![brick(&here, "/b1"), brick("node-b", "/b1")]),
                set(1, vec![brick(&here, "/b2"), brick("node-b", "/b2")]),
            ],
            sharded: false,
        };
        let g = HealGate::new(&topology, "gv0-replicate-0", Path::new("/b1"));
        assert_eq!(g.others, vec![("node-b".to_owned(), PathBuf::from("/b1"))]);
    }

    fn check(at: i64, b1: Option<u64>, b2: Option<u64>) -> HealCheck {
        let state = |p: &str, pending| HealState {
            host: "node-a".into(),
            path: p.into(),
            pending,
        };
        HealCheck {
            asked_at: Stime::from_secs(at),
            bricks: vec![state("/b1", b1), state("/b2", b2)],
        }
    }

    fn gate() -> HealGate {
        HealGate::watching(vec![("node-a".into(), "/b2".into())])
    }

    #[test]
    fn stime_reaches_only_the_latest_answer_without_pending_heals() {
        let mut g = gate();
        assert_eq!(g.bound(Some(Stime::from_secs(50))), None, "no answer yet");
        g.observe(&check(100, Some(0), Some(0)));
        assert_eq!(
            g.bound(Some(Stime::from_secs(200))),
            Some(Stime::from_secs(100))
        );
        // What this brick itself lists is no reason to wait: it has it.
        g.observe(&check(102, Some(7), Some(0)));
        assert_eq!(g.bound(None), Some(Stime::from_secs(102)));
        assert_eq!(g.waiting(), None);
        // An older answer arriving late changes nothing.
        g.observe(&check(101, Some(0), Some(3)));
        assert_eq!(g.bound(None), Some(Stime::from_secs(102)));
    }

    /// A gate that has taken in answers `(asked at, entries /b2 lists)`.
    fn after(answers: &[(i64, Option<u64>)]) -> HealGate {
        let mut g = gate();
        for (at, pending) in answers {
            g.observe(&check(*at, Some(0), *pending));
        }
        g
    }

    fn secs(s: i64) -> Option<Stime> {
        Some(Stime::from_secs(s))
    }

    #[test]
    fn while_another_member_lists_entries_stime_stays_then_waits_for_the_heal_to_be_read() {
        let g = after(&[(100, Some(0)), (102, Some(4))]);
        let why = g.waiting().unwrap();
        assert!(why.contains("4 on node-a:/b2"), "{why}");
        let g = after(&[(100, Some(0)), (102, Some(4)), (104, None)]);
        let why = g.waiting().unwrap();
        assert!(
            !why.contains("pending"),
            "an unreachable member lists nothing: {why}"
        );

        let mut g = after(&[(100, Some(0)), (102, Some(4)), (104, Some(2))]);
        assert_eq!(g.bound(secs(300)), secs(100));
        // Healed by 106: its records are in the changelog read past 106.
        g.observe(&check(106, Some(0), Some(0)));
        g.observe(&check(108, Some(0), Some(0)));
        assert!(g.waiting().unwrap().contains("healed"));
        assert_eq!(g.bound(secs(106)), secs(100));
        assert_eq!(g.bound(secs(107)), secs(108));
        assert_eq!(g.waiting(), None);

        // A new heal while settling starts over.
        let mut g = after(&[
            (100, Some(0)),
            (102, Some(1)),
            (104, Some(0)),
            (106, Some(1)),
        ]);
        assert_eq!(g.bound(secs(300)), secs(100));
        g.observe(&check(108, Some(0), Some(0)));
        assert_eq!(g.bound(secs(108)), secs(100));
        assert_eq!(g.bound(secs(109)), secs(108));
    }
}
