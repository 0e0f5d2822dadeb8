//! The ledger of one batch: the requests whose reply changes what the
//! shipper does next, by sequence number, and the routing of every reply
//! that is not the one being waited for (a barrier's, a commit's).
//!
//! Pure: it neither sends nor receives. The shipper records what it sends
//! (`record`), hands each stray reply to [`Ledger::route`] and acts on the
//! [`Routed`] answer. Nothing is cleared at a barrier: a failure may name a
//! request of this batch sent before it, and the ledger lives as long as the
//! batch's shipper.

use std::collections::HashMap;

use super::ShipError;
use crate::proto::{Failure, FailureKind, Reply, Request};
use crate::relpath::RelPath;

/// What a request sent in this batch is remembered for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Awaiting {
    /// An entry and the paths it concerns (for a rename: its destination,
    /// then its source), resent whole if the slave's tree diverged. An
    /// entry whose failures name the path concerned (a prune) is not
    /// recorded: then that path is resent.
    Entry { paths: Vec<RelPath> },
    /// A `Link` that relinks a name of a file sent in this batch: a missing
    /// target there only means the file did not land (a later batch sends
    /// it again), so it is no failure.
    Relink,
    /// A file sent as a delta (the `seq` of its `FileBegin`): sent again
    /// whole if the slave cannot rebuild it.
    Delta { path: RelPath },
    /// A `CheckListing` of `dir`.
    Listing { dir: RelPath },
}

/// What a reply asks of the shipper.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Routed {
    /// A relink found no target: the file did not land; nothing to do.
    NotRelinked(Failure),
    /// The slave's tree is not what the request expected (`SourceMissing`,
    /// `Conflict`, `Unsafe`): `paths` are resent from the brick.
    Heal {
        paths: Vec<RelPath>,
        failure: Failure,
    },
    /// The slave could not rebuild a delta (its copy was not the one its
    /// signature described): `path` is sent again whole.
    Literal { path: RelPath, failure: Failure },
    /// The slave's listing of this directory differs from the brick's.
    ListingDiffers(RelPath),
    /// A failure that may go away: the batch is retried.
    Transient(Failure),
    /// A permanent failure of one path.
    Failed(Failure),
}

/// The outstanding requests of one batch (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Ledger {
    awaiting: HashMap<u64, Awaiting>,
    /// Entries were sent since the last barrier.
    unsettled: bool,
}

impl Ledger {
    /// Remembers what request `seq` was sent for.
    pub(super) fn record(&mut self, seq: u64, awaiting: Awaiting) {
        self.awaiting.insert(seq, awaiting);
    }

    /// Notes that an entry was sent: the slave may still be applying it.
    pub(super) fn entry_sent(&mut self) {
        self.unsettled = true;
    }

    /// Whether entries were sent since the last barrier.
    pub(super) fn unsettled(&self) -> bool {
        self.unsettled
    }

    /// A barrier is being waited for: everything sent before is applied
    /// once it returns.
    pub(super) fn settle(&mut self) {
        self.unsettled = false;
    }

    /// Takes the record of `seq` if `wanted` holds for it.
    fn take(&mut self, seq: u64, wanted: fn(&Awaiting) -> bool) -> Option<Awaiting> {
        match self.awaiting.get(&seq) {
            Some(a) if wanted(a) => self.awaiting.remove(&seq),
            _ => None,
        }
    }

    /// What `reply`, not the one being waited for, asks of the shipper. A
    /// reply no request of this batch can have caused is an error. The
    /// failure's own checks (sent in this batch, not more than requests)
    /// are the shipper's, before this.
    pub(super) fn route(&mut self, reply: Reply) -> Result<Routed, ShipError> {
        let f = match reply {
            Reply::Failed(f) => f,
            Reply::ListingDiffers { seq } => {
                return match self.take(seq, |a| matches!(a, Awaiting::Listing { .. })) {
                    Some(Awaiting::Listing { dir }) => Ok(Routed::ListingDiffers(dir)),
                    _ => Err(ShipError::Unexpected(format!(
                        "ListingDiffers for request {seq}, which checked no listing"
                    ))),
                };
            }
            other => return Err(ShipError::Unexpected(format!("{other:?}"))),
        };
        if f.kind == FailureKind::Mismatch {
            if let Some(Awaiting::Delta { path }) =
                self.take(f.seq, |a| matches!(a, Awaiting::Delta { .. }))
            {
                return Ok(Routed::Literal { path, failure: f });
            }
        }
        Ok(match f.kind {
            // Kept: each failure of the same relink is as harmless.
            FailureKind::SourceMissing if self.awaiting.get(&f.seq) == Some(&Awaiting::Relink) => {
                Routed::NotRelinked(f)
            }
            FailureKind::SourceMissing | FailureKind::Conflict | FailureKind::Unsafe => {
                let paths = match self.take(f.seq, |a| matches!(a, Awaiting::Entry { .. })) {
                    Some(Awaiting::Entry { paths }) => paths,
                    _ => vec![f.path.clone()],
                };
                Routed::Heal { paths, failure: f }
            }
            kind if kind.is_transient() => Routed::Transient(f),
            _ => Routed::Failed(f),
        })
    }
}

/// Whether `reply` is the answer that ends the wait for `request` on its
/// lane: the barrier with its id, the commit of its batch.
pub(super) fn answers(request: &Request, reply: &Reply) -> bool {
    match (request, reply) {
        (Request::Barrier { id }, Reply::Barrier { id: got }) => id == got,
        (Request::Commit { batch }, Reply::Committed { batch: got }) => batch == got,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn failed(seq: u64, p: &str, kind: FailureKind) -> Reply {
        Reply::Failed(failure(seq, p, kind))
    }

    fn failure(seq: u64, p: &str, kind: FailureKind) -> Failure {
        Failure {
            seq,
            path: path(p),
            kind,
            errno: None,
            message: "m".into(),
        }
    }

    /// A heal of the path the failure names.
    fn heal_own(seq: u64, p: &str, kind: FailureKind) -> Routed {
        Routed::Heal {
            paths: vec![path(p)],
            failure: failure(seq, p, kind),
        }
    }

    #[test]
    fn an_entry_failure_heals_the_paths_recorded_once() {
        let mut ledger = Ledger::default();
        let paths = vec![path("d/to"), path("d/from")];
        ledger.record(
            3,
            Awaiting::Entry {
                paths: paths.clone(),
            },
        );
        let got = ledger.route(failed(3, "d/from", FailureKind::SourceMissing));
        assert_eq!(
            got.unwrap(),
            Routed::Heal {
                paths,
                failure: failure(3, "d/from", FailureKind::SourceMissing)
            }
        );
        // The record is taken: a second failure heals the path it names.
        let got = ledger.route(failed(3, "d/x", FailureKind::Conflict));
        assert_eq!(got.unwrap(), heal_own(3, "d/x", FailureKind::Conflict));
    }

    #[test]
    fn an_unrecorded_failure_of_a_diverged_tree_heals_its_path() {
        let mut ledger = Ledger::default();
        let got = ledger.route(failed(9, "p", FailureKind::Unsafe)).unwrap();
        assert_eq!(got, heal_own(9, "p", FailureKind::Unsafe));
    }

    #[test]
    fn a_relink_without_target_is_no_failure_each_time() {
        let mut ledger = Ledger::default();
        ledger.record(4, Awaiting::Relink);
        for _ in 0..2 {
            let got = ledger.route(failed(4, "n", FailureKind::SourceMissing));
            assert_eq!(
                got.unwrap(),
                Routed::NotRelinked(failure(4, "n", FailureKind::SourceMissing))
            );
        }
        // Another failure of a relink is healed like any entry's.
        let got = ledger.route(failed(4, "n", FailureKind::Conflict)).unwrap();
        assert!(matches!(got, Routed::Heal { paths, .. } if paths == vec![path("n")]));
    }

    #[test]
    fn a_delta_mismatch_is_resent_whole_once() {
        let mut ledger = Ledger::default();
        ledger.record(5, Awaiting::Delta { path: path("f") });
        let got = ledger.route(failed(5, "f", FailureKind::Mismatch)).unwrap();
        assert_eq!(
            got,
            Routed::Literal {
                path: path("f"),
                failure: failure(5, "f", FailureKind::Mismatch)
            }
        );
        // Once resent, a further mismatch is transient like any other.
        let got = ledger.route(failed(5, "f", FailureKind::Mismatch));
        assert!(matches!(got.unwrap(), Routed::Transient(_)));
    }

    #[test]
    fn a_failure_of_a_diverged_tree_leaves_other_records_alone() {
        let mut ledger = Ledger::default();
        ledger.record(6, Awaiting::Delta { path: path("f") });
        let got = ledger.route(failed(6, "f", FailureKind::SourceMissing));
        assert!(matches!(got.unwrap(), Routed::Heal { paths, .. } if paths == vec![path("f")]));
        let got = ledger.route(failed(6, "f", FailureKind::Mismatch)).unwrap();
        assert!(matches!(got, Routed::Literal { .. }));
    }

    #[test]
    fn a_listing_differs_once_and_only_for_a_listing() {
        let mut ledger = Ledger::default();
        ledger.record(7, Awaiting::Listing { dir: path("d") });
        ledger.record(
            8,
            Awaiting::Entry {
                paths: vec![path("e")],
            },
        );
        let got = ledger.route(Reply::ListingDiffers { seq: 7 }).unwrap();
        assert_eq!(got, Routed::ListingDiffers(path("d")));
        for seq in [7, 8, 99] {
            let err = ledger.route(Reply::ListingDiffers { seq }).unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("request {seq}, which checked no listing")),
                "{err}"
            );
        }
        // The entry's record survived the refused reply.
        let got = ledger.route(failed(8, "x", FailureKind::Conflict)).unwrap();
        assert!(matches!(got, Routed::Heal { paths, .. } if paths == vec![path("e")]));
    }

    #[test]
    fn other_failures_are_transient_or_permanent_by_kind() {
        let mut ledger = Ledger::default();
        ledger.record(
            1,
            Awaiting::Entry {
                paths: vec![path("e")],
            },
        );
        for (kind, transient) in [
            (FailureKind::NoSpace, true),
            (FailureKind::Io, true),
            (FailureKind::Mismatch, true),
            (FailureKind::Permission, false),
            (FailureKind::Unsupported, false),
        ] {
            let f = failure(1, "e", kind);
            let want = if transient {
                Routed::Transient(f)
            } else {
                Routed::Failed(f)
            };
            assert_eq!(ledger.route(failed(1, "e", kind)).unwrap(), want);
        }
    }

    #[test]
    fn a_reply_nothing_awaits_is_unexpected() {
        let mut ledger = Ledger::default();
        let err = ledger.route(Reply::Barrier { id: 1 }).unwrap_err();
        assert!(matches!(err, ShipError::Unexpected(_)), "{err}");
    }

    #[test]
    fn only_entries_unsettle_until_the_barrier() {
        let mut ledger = Ledger::default();
        ledger.record(1, Awaiting::Relink);
        assert!(!ledger.unsettled());
        ledger.entry_sent();
        assert!(ledger.unsettled());
        ledger.settle();
        assert!(!ledger.unsettled());
    }

    #[test]
    fn a_wait_ends_on_its_own_answer_only() {
        let barrier = Request::Barrier { id: 4 };
        assert!(answers(&barrier, &Reply::Barrier { id: 4 }));
        assert!(!answers(&barrier, &Reply::Barrier { id: 3 }));
        assert!(!answers(&barrier, &Reply::Committed { batch: 4 }));
        let commit = Request::Commit { batch: 2 };
        assert!(answers(&commit, &Reply::Committed { batch: 2 }));
        assert!(!answers(&commit, &Reply::Committed { batch: 1 }));
        assert!(!answers(&commit, &Reply::Barrier { id: 2 }));
    }
}
